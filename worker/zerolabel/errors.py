"""Errors raised by zerolabel (standard library only): the whole tree, in one place.

DiscoveryError
 ├── ConfigError (ValueError)   a setting, option or labeling config that cannot be served
 ├── ImageLoadError             one image could not be read (its task fails, the batch goes on)
 │    └── TransientFetchError   a download failure that may pass (retried)
 ├── WeightsError               backbone weights missing or not matching the architecture
 ├── RegionError (ValueError)   a Label Studio result item that cannot be read
 │    └── NoImageSize           a result list without the image's size (an empty negative)
 ├── LabelStudioError           a Label Studio API call failed (status, method, path, message)
 ├── TokenExchangeError         a personal access token was not exchanged
 ├── RedisUnavailable           Redis went away mid-operation (the worker waits it out)
 ├── WorkerNameInUse            another live worker serves under this name
 └── QuarantinedJobError        a job that stopped its worker too often
UnsafeURLError (ValueError)     an http(s) URL refused before any request
JSONFileError (ValueError)      a file that should hold JSON does not (file, line, column)
"""

from __future__ import annotations

import json
import os


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


class TransientFetchError(ImageLoadError):
    """A failure that may pass (connection, timeout, HTTP 429 or 5xx), raised after the retries."""


class RegionError(DiscoveryError, ValueError):
    """A result item or result list that cannot be read; the message is the reason."""


class NoImageSize(RegionError):
    """No item of a result list carries the image size (e.g. an empty result: a negative)."""


class LabelStudioError(DiscoveryError):
    """A Label Studio request failed.

    Attributes:
        status: HTTP status, or None when no reply came (connection failure, timeout).
        method: HTTP method.
        path: path and query string of the request, without the host.
        message: Label Studio's ``detail`` and ``validation_errors``, or the cause.
    """

    def __init__(self, status: int | None, method: str, path: str, message: str) -> None:
        where = f"HTTP {status}" if status is not None else "no reply"
        super().__init__(f"Label Studio {method} {path}: {where}: {message}")
        self.status = status
        self.method = method
        self.path = path
        self.message = message


class TokenExchangeError(DiscoveryError):
    """Label Studio gave no access token for the personal access token.

    Attributes:
        status: HTTP status of Label Studio's reply.
        detail: Label Studio's message, or what was wrong with the reply; never a token.
        refused: Label Studio refused the personal access token (a new one is needed).
        transient: the exchange may succeed when tried again later.
    """

    def __init__(
        self, status: int, detail: str, *, endpoint: str, refused: bool, transient: bool
    ) -> None:
        super().__init__(f"Label Studio token exchange at {endpoint}: HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.refused = refused
        self.transient = transient


class RedisUnavailable(DiscoveryError):
    """Redis went away in the middle of an operation; raised to reach the code that waits."""


class WorkerNameInUse(DiscoveryError):
    """Another live worker process already serves under this name."""


class QuarantinedJobError(DiscoveryError):
    """The job stopped its worker too often to be run again."""


class ForeignJobError(DiscoveryError):
    """A job in the queue that names a function or callback the worker does not serve.

    Whoever reaches Redis can write jobs; a worker runs only its own job function and fails any
    other job without importing what it names.
    """


class UnsafeURLError(ValueError):
    """An http(s) URL refused by :func:`parse_http_url`; the message says why (never the URL)."""


class JSONFileError(ValueError):
    """A file that should hold JSON does not; names the file, line and column."""

    def __init__(self, path: str | os.PathLike[str], error: json.JSONDecodeError) -> None:
        super().__init__(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        )
        self.path = str(path)
        self.lineno = error.lineno
        self.colno = error.colno
