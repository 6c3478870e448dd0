"""Errors raised by zerolabel (standard library only).

DiscoveryError
 ├── ConfigError        a setting, option or labeling config that cannot be served
 ├── ImageLoadError     one image could not be read (its task fails, the batch goes on)
 └── WeightsError       backbone weights missing or not matching the architecture
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Base of every error zerolabel raises on purpose."""


class ConfigError(DiscoveryError, ValueError):
    """A setting, CLI option or labeling config that cannot be served."""


class ImageLoadError(DiscoveryError):
    """An image could not be loaded; names the source and the cause."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class WeightsError(DiscoveryError):
    """Backbone weights could not be obtained or do not fit the architecture."""
