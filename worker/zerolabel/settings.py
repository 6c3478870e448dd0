"""Worker and CLI settings, read from the environment once per process in entry points.

Every variable is documented in docker/zerolabel.env.example and the README.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError

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
class QueueSettings:
    """Where the queue lives and how long things are kept (shared by backend and workers)."""

    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    queue: str = "zerolabel"  # ZEROLABEL_QUEUE
    job_timeout_s: int = 600  # ZEROLABEL_JOB_TIMEOUT_S: a job running longer is killed
    result_ttl_s: int = 30 * 86400  # ZEROLABEL_RESULT_TTL_S: how long results are kept
    lease_s: int = 15  # ZEROLABEL_LEASE_S: a started job whose worker stopped renewing is re-run
    retries: int = 2  # ZEROLABEL_JOB_RETRIES: re-runs after a transient failure (fetch timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QueueSettings:
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        if env.get("REDIS_URL"):
            kwargs["redis_url"] = env["REDIS_URL"]
        if env.get("ZEROLABEL_QUEUE"):
            kwargs["queue"] = env["ZEROLABEL_QUEUE"]
        for field_name, name in (
            ("job_timeout_s", "ZEROLABEL_JOB_TIMEOUT_S"),
            ("result_ttl_s", "ZEROLABEL_RESULT_TTL_S"),
            ("lease_s", "ZEROLABEL_LEASE_S"),
            ("retries", "ZEROLABEL_JOB_RETRIES"),
        ):
            if env.get(name):
                try:
                    kwargs[field_name] = int(env[name])
                except ValueError:
                    raise ConfigError(f"{name}={env[name]!r} is not an integer") from None
        return cls(**kwargs)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker or CLI process needs to build its backbone and run discovery."""

    backbone: str = "dino_vits16"  # ZEROLABEL_BACKBONE: a name of backbone.BACKBONES or a timm ViT
    checkpoint: str | None = None  # ZEROLABEL_CHECKPOINT: local weights file (DINO, DoRA, timm)
    weights_tag: str | None = None  # ZEROLABEL_WEIGHTS_TAG: names the weights in model_version
    cad_checkpoint: str | None = None  # ZEROLABEL_CAD_CHECKPOINT: detector served by method "cad"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # ZEROLABEL_BACKBONE_KWARGS
    pos_embed: str = "dino"  # ZEROLABEL_POS_EMBED: "dino" (paper rule) or "timm"
    offline: bool = False  # ZEROLABEL_OFFLINE (or HF_HUB_OFFLINE): never try to download weights
    device: str = "auto"  # ZEROLABEL_DEVICE: auto, cpu, cuda, cuda:1 ...
    half: bool = False  # ZEROLABEL_HALF: fp16 forward pass (CUDA only)
    method: str = "lost"  # ZEROLABEL_METHOD
    max_side: int | None = None  # ZEROLABEL_MAX_SIDE: cap on the longer side; None = method default
    batch_size: int = 8  # ZEROLABEL_BATCH_SIZE: images per forward pass (same-size images)
    max_image_bytes: int = 64 * 2**20  # ZEROLABEL_MAX_IMAGE_BYTES
    max_image_pixels: int = 100_000_000  # ZEROLABEL_MAX_IMAGE_PIXELS
    ls_url: str | None = None  # LABEL_STUDIO_URL: for task URLs like /data/upload/...
    ls_token: str | None = field(default=None, repr=False)  # LABEL_STUDIO_API_KEY (legacy or PAT)
    allowed_hosts: frozenset[str] = frozenset()  # ZEROLABEL_ALLOWED_HOSTS: extra image hosts
    local_roots: tuple[str, ...] = ()  # ZEROLABEL_LOCAL_ROOTS: folders queued jobs may read
    fetch_timeout_s: float = 20.0  # ZEROLABEL_FETCH_TIMEOUT_S: per download attempt
    queue: QueueSettings = field(default_factory=QueueSettings)  # REDIS_URL, ZEROLABEL_QUEUE...

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        """Build from ``env`` (default ``os.environ``); a malformed value fails here, at start."""
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        if "ZEROLABEL_BACKBONE" in env:
            kwargs["backbone"] = env["ZEROLABEL_BACKBONE"]
        if env.get("ZEROLABEL_CHECKPOINT"):
            kwargs["checkpoint"] = env["ZEROLABEL_CHECKPOINT"]
        if env.get("ZEROLABEL_CAD_CHECKPOINT"):
            kwargs["cad_checkpoint"] = env["ZEROLABEL_CAD_CHECKPOINT"]
        if env.get("ZEROLABEL_WEIGHTS_TAG"):
            kwargs["weights_tag"] = env["ZEROLABEL_WEIGHTS_TAG"]
        if env.get("ZEROLABEL_BACKBONE_KWARGS"):
            kwargs["backbone_kwargs"] = _json_object(
                "ZEROLABEL_BACKBONE_KWARGS", env["ZEROLABEL_BACKBONE_KWARGS"]
            )
        if "ZEROLABEL_POS_EMBED" in env:
            kwargs["pos_embed"] = env["ZEROLABEL_POS_EMBED"]
        for name in ("ZEROLABEL_OFFLINE", "HF_HUB_OFFLINE"):
            if env.get(name) and parse_bool(name, env[name]):
                kwargs["offline"] = True
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
        kwargs.update(_fetch_fields(env))
        settings = cls(queue=QueueSettings.from_env(env), **kwargs)
        settings.validate()
        return settings

    @property
    def weights(self) -> str:
        """How model_version names the weights: the tag, else the checkpoint file name, else hub."""
        if self.weights_tag:
            return self.weights_tag
        return os.path.basename(self.checkpoint) if self.checkpoint else "hub"

    def spec(self, **overrides: Any) -> DiscoverySpec:
        """The discovery spec these settings describe, with per-request overrides."""
        fields: dict[str, Any] = {
            "method": self.method,
            "backbone": self.backbone,
            "weights": self.weights,
            "max_side": self.max_side,
            "pos_embed": self.pos_embed,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        if fields["method"] == "cad":
            if not self.cad_checkpoint:
                raise ConfigError(
                    "method 'cad' needs ZEROLABEL_CAD_CHECKPOINT (or --cad-checkpoint): the "
                    "file zerolabel train-cad wrote"
                )
            fields |= {"backbone": "cad", "weights": os.path.basename(self.cad_checkpoint)}
        try:
            return DiscoverySpec(**fields)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def validate(self) -> None:
        self.spec()  # unknown method fails here
        if self.pos_embed not in ("dino", "timm"):
            raise ConfigError(f"ZEROLABEL_POS_EMBED={self.pos_embed!r}: use 'dino' or 'timm'")
        if self.batch_size < 1:
            raise ConfigError("ZEROLABEL_BATCH_SIZE must be at least 1")


def _fetch_fields(env: Mapping[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if env.get("LABEL_STUDIO_URL"):
        fields["ls_url"] = env["LABEL_STUDIO_URL"].rstrip("/")
    if env.get("LABEL_STUDIO_API_KEY"):
        fields["ls_token"] = env["LABEL_STUDIO_API_KEY"]
    if env.get("ZEROLABEL_ALLOWED_HOSTS"):
        from zerolabel.io.fetch import parse_allowed_hosts

        fields["allowed_hosts"] = parse_allowed_hosts(env["ZEROLABEL_ALLOWED_HOSTS"])
    if env.get("ZEROLABEL_LOCAL_ROOTS"):
        roots = env["ZEROLABEL_LOCAL_ROOTS"].split(os.pathsep)
        fields["local_roots"] = tuple(r for r in roots if r)
    if env.get("ZEROLABEL_FETCH_TIMEOUT_S"):
        try:
            fields["fetch_timeout_s"] = float(env["ZEROLABEL_FETCH_TIMEOUT_S"])
        except ValueError:
            raise ConfigError("ZEROLABEL_FETCH_TIMEOUT_S must be a number of seconds") from None
    return fields


def _json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"depth\": 6}}'")
    return parsed


@dataclass(frozen=True)
class BackendSettings:
    """What the backend process needs; built once in the entry point."""

    discovery: WorkerSettings = field(default_factory=WorkerSettings)
    wait_timeout_s: float = 30.0  # ZEROLABEL_WAIT_TIMEOUT_S: how long /predict waits for jobs
    label: str | None = None  # ZEROLABEL_LABEL: label value to use (default: "object"-like)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BackendSettings:
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {"discovery": WorkerSettings.from_env(env)}
        if env.get("ZEROLABEL_WAIT_TIMEOUT_S"):
            try:
                kwargs["wait_timeout_s"] = float(env["ZEROLABEL_WAIT_TIMEOUT_S"])
            except ValueError:
                raise ConfigError("ZEROLABEL_WAIT_TIMEOUT_S must be a number of seconds") from None
        if env.get("ZEROLABEL_LABEL"):
            kwargs["label"] = env["ZEROLABEL_LABEL"]
        return cls(**kwargs)
