"""Worker and CLI settings, read from the environment once per process in entry points.

Every variable is documented in docker/zerolabel.env.example and the README.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, value: str) -> bool:
    """Strict boolean: a typo is an error, never a silent False."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use one of: true, false, 1, 0)")


def _int_or_none(name: str, value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
    if number < 0:
        raise ConfigError(f"{name}={value!r} must be >= 0 (0 means no limit)")
    return number or None


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker or CLI process needs to build its backbone and run discovery."""

    backbone: str = "dino_vits16"  # ZEROLABEL_BACKBONE: a name of backbone.BACKBONES or a timm ViT
    checkpoint: str | None = None  # ZEROLABEL_CHECKPOINT: local weights file (DINO, DoRA, timm)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # ZEROLABEL_BACKBONE_KWARGS
    pos_embed: str = "dino"  # ZEROLABEL_POS_EMBED: "dino" (paper rule) or "timm"
    device: str = "auto"  # ZEROLABEL_DEVICE: auto, cpu, cuda, cuda:1 ...
    half: bool = False  # ZEROLABEL_HALF: fp16 forward pass (CUDA only)
    method: str = "lost"  # ZEROLABEL_METHOD
    max_side: int | None = None  # ZEROLABEL_MAX_SIDE: cap on the longer side; None = method default
    batch_size: int = 8  # ZEROLABEL_BATCH_SIZE: images per forward pass (same-size images)
    max_image_bytes: int = 64 * 2**20  # ZEROLABEL_MAX_IMAGE_BYTES
    max_image_pixels: int = 100_000_000  # ZEROLABEL_MAX_IMAGE_PIXELS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build from ``env`` (default ``os.environ``); a malformed value fails here, at start."""
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        if "ZEROLABEL_BACKBONE" in env:
            kwargs["backbone"] = env["ZEROLABEL_BACKBONE"]
        if env.get("ZEROLABEL_CHECKPOINT"):
            kwargs["checkpoint"] = env["ZEROLABEL_CHECKPOINT"]
        if env.get("ZEROLABEL_BACKBONE_KWARGS"):
            kwargs["backbone_kwargs"] = _json_object(
                "ZEROLABEL_BACKBONE_KWARGS", env["ZEROLABEL_BACKBONE_KWARGS"]
            )
        if "ZEROLABEL_POS_EMBED" in env:
            kwargs["pos_embed"] = env["ZEROLABEL_POS_EMBED"]
        if "ZEROLABEL_DEVICE" in env:
            kwargs["device"] = env["ZEROLABEL_DEVICE"]
        if "ZEROLABEL_HALF" in env:
            kwargs["half"] = parse_bool("ZEROLABEL_HALF", env["ZEROLABEL_HALF"])
        if "ZEROLABEL_METHOD" in env:
            kwargs["method"] = env["ZEROLABEL_METHOD"]
        if env.get("ZEROLABEL_MAX_SIDE"):
            kwargs["max_side"] = _int_or_none("ZEROLABEL_MAX_SIDE", env["ZEROLABEL_MAX_SIDE"])
        for key, name in (
            ("batch_size", "ZEROLABEL_BATCH_SIZE"),
            ("max_image_bytes", "ZEROLABEL_MAX_IMAGE_BYTES"),
            ("max_image_pixels", "ZEROLABEL_MAX_IMAGE_PIXELS"),
        ):
            if env.get(name):
                kwargs[key] = _int_or_none(name, env[name]) or getattr(cls, key)
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.pos_embed not in ("dino", "timm"):
            raise ConfigError(f"ZEROLABEL_POS_EMBED={self.pos_embed!r}: use 'dino' or 'timm'")
        if self.batch_size < 1:
            raise ConfigError("ZEROLABEL_BATCH_SIZE must be at least 1")


def _json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"depth\": 6}}'")
    return parsed


@functools.cache
def get_settings() -> WorkerSettings:
    """The process-wide settings (read once, in entry points)."""
    return WorkerSettings.from_env()
