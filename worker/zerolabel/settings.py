"""Worker and CLI settings, read from the environment once per process in entry points.

Every variable is documented in docker/zerolabel.env.example and the README. Settings hold
values, checked here so that a process fails at start; the modules they configure build their
objects from them (e.g. :meth:`zerolabel.io.fetch.FetchPolicy.from_settings`). This module sits
below all of those: of the package it imports only modules that need nothing but the standard
library (:mod:`zerolabel.sites`, :mod:`zerolabel.methods`, :mod:`zerolabel.contract`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.methods import FALSE_WORDS, TRUE_WORDS, MethodKind
from zerolabel.sites import (
    ALLOWED_HOSTS_SETTING,
    LS_ALIASES_SETTING,
    LS_TOKEN_SETTING,
    LS_URL_SETTING,
    LabelStudioSites,
    parse_allowed_hosts,
)


def parse_bool(name: str, value: str) -> bool:
    """Strict boolean: a typo is an error, never a silent False."""
    lowered = value.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use one of: true, false, 1, 0)")


class EnvReader:
    """Typed reads of one environment mapping; every settings class parses through it.

    A variable that is unset or empty reads as None (the setting keeps its default); a value
    that does not parse, or lies below its minimum, is a :class:`ConfigError` naming the
    variable, so a process fails at start rather than on its first job.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env

    def text(self, name: str) -> str | None:
        """The value, or None when unset or empty."""
        return self.env.get(name) or None

    def integer(self, name: str, *, minimum: int | None = None, note: str = "") -> int | None:
        """An integer ``>= minimum``; ``note`` explains the bound in the error message."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            number = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if minimum is not None and number < minimum:
            raise ConfigError(f"{name}={raw!r} must be >= {minimum}{note}")
        return number

    def number(self, name: str, *, positive: bool = False, unit: str = "") -> float | None:
        """A finite float ``>= 0`` (``> 0`` when ``positive``); ``unit`` names it in messages."""
        raw = self.text(name)
        if raw is None:
            return None
        what = f"a number of {unit}" if unit else "a number"
        try:
            number = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}={raw!r} must be {what}") from None
        if not math.isfinite(number) or number < 0 or (positive and number == 0):
            raise ConfigError(f"{name}={raw!r} must be {what} {'> 0' if positive else '>= 0'}")
        return number

    def flag(self, name: str) -> bool | None:
        """A strict boolean (see :func:`parse_bool`); None when unset or empty."""
        raw = self.text(name)
        return None if raw is None else parse_bool(name, raw)

    def json_object(self, name: str) -> dict[str, Any] | None:
        """A JSON object, e.g. ``{"depth": 6}``; None when unset or empty."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name} is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ConfigError(f"{name} must be a JSON object, e.g. '{{\"depth\": 6}}'")
        return parsed


def _present(**values: Any) -> dict[str, Any]:
    """The keyword arguments that were read (not None)."""
    return {key: value for key, value in values.items() if value is not None}


MIN_RETENTION_S = 86_400
"""The shortest retention: a task's job and bookkeeping must outlive the queue's longest wait
(a large pre-labeling run on few workers) and the write-back."""
_RETENTION_NOTE = " (a day at least: jobs wait in the queue and for their write-back that long)"


@dataclass(frozen=True)
class QueueSettings:
    """Where the queue lives and how long things are kept (shared by backend and workers)."""

    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    # REDIS_PASSWORD: Redis's password, when REDIS_URL does not carry one (compose's Redis needs it)
    redis_password: str | None = field(default=None, repr=False)
    queue: str = "zerolabel"  # ZEROLABEL_QUEUE
    job_timeout_s: int = 600  # ZEROLABEL_JOB_TIMEOUT_S: a job running longer is killed
    # ZEROLABEL_RESULT_TTL_S: the retention: no key a request writes to Redis lives longer
    result_ttl_s: int = 30 * 86400
    lease_s: int = 15  # ZEROLABEL_LEASE_S: a started job whose worker stopped renewing is re-run
    retries: int = 2  # ZEROLABEL_JOB_RETRIES: re-runs after a transient failure (fetch timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvReader | None = None) -> QueueSettings:
        """Build from ``env`` (default ``os.environ``); a malformed value fails here, at start."""
        read = env if isinstance(env, EnvReader) else EnvReader(env)
        return cls(
            **_present(
                redis_url=read.text("REDIS_URL"),
                redis_password=read.text("REDIS_PASSWORD"),
                queue=read.text("ZEROLABEL_QUEUE"),
                job_timeout_s=read.integer("ZEROLABEL_JOB_TIMEOUT_S", minimum=1),
                result_ttl_s=read.integer(
                    "ZEROLABEL_RESULT_TTL_S", minimum=MIN_RETENTION_S, note=_RETENTION_NOTE
                ),
                lease_s=read.integer("ZEROLABEL_LEASE_S", minimum=1),
                retries=read.integer("ZEROLABEL_JOB_RETRIES", minimum=0),
            )
        )


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker or CLI process needs to build its backbone and run discovery."""

    backbone: str = "dino_vits16"  # ZEROLABEL_BACKBONE: a name of backbone.BACKBONES or a timm ViT
    checkpoint: str | None = None  # ZEROLABEL_CHECKPOINT: local weights file (DINO, DoRA, timm)
    weights_tag: str | None = None  # ZEROLABEL_WEIGHTS_TAG: names the weights in model_version
    cad_checkpoint: str | None = None  # ZEROLABEL_CAD_CHECKPOINT: detector served by method "cad"
    fitted: str | None = None  # ZEROLABEL_FITTED: fitted file of methods that use one
    models_dir: str | None = None  # ZEROLABEL_MODELS_DIR: detectors, fitted files projects name
    worker_models: int = 3  # ZEROLABEL_WORKER_MODELS: detectors (and fitted files) kept loaded
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # ZEROLABEL_BACKBONE_KWARGS
    pos_embed: str = "dino"  # ZEROLABEL_POS_EMBED: "dino" (paper rule) or "timm"
    offline: bool = False  # ZEROLABEL_OFFLINE (or HF_HUB_OFFLINE): never try to download weights
    device: str = "auto"  # ZEROLABEL_DEVICE: auto, cpu, cuda, cuda:1 ...
    half: bool = False  # ZEROLABEL_HALF: fp16 weights and forward pass (CUDA only)
    precision: str = "fp32"  # ZEROLABEL_PRECISION: fp32, or fp16/bf16 autocast
    compile_mode: str | None = None  # ZEROLABEL_COMPILE: torch.compile mode; None: eager
    method: str = "lost"  # ZEROLABEL_METHOD
    max_side: int | None = None  # ZEROLABEL_MAX_SIDE: None: method default, 0: full size
    batch_size: int = 8  # ZEROLABEL_BATCH_SIZE: images per forward pass (same-size images)
    worker_batch: int | None = None  # ZEROLABEL_WORKER_BATCH: jobs a worker takes at once
    # ZEROLABEL_FEATURE_CACHE_MB: patch features of recent images kept for interactive prompts
    feature_cache_mb: int = 256
    max_image_bytes: int = 64 * 2**20  # ZEROLABEL_MAX_IMAGE_BYTES
    max_image_pixels: int = 100_000_000  # ZEROLABEL_MAX_IMAGE_PIXELS
    ls_url: str | None = None  # LABEL_STUDIO_URL: for task URLs like /data/upload/...
    ls_token: str | None = field(default=None, repr=False)  # LABEL_STUDIO_API_KEY (legacy or PAT)
    ls_aliases: tuple[str, ...] = ()  # ZEROLABEL_LABEL_STUDIO_ALIASES: other URLs of that LS
    allowed_hosts: frozenset[str] = frozenset()  # ZEROLABEL_ALLOWED_HOSTS: extra image hosts
    local_roots: tuple[str, ...] = ()  # ZEROLABEL_LOCAL_ROOTS: folders queued jobs may read
    ls_media: str | None = None  # ZEROLABEL_LABEL_STUDIO_MEDIA: LS's media folder, mounted here
    ls_files_root: str | None = None  # ZEROLABEL_LABEL_STUDIO_FILES: LS's local-files root here
    fetch_timeout_s: float = 20.0  # ZEROLABEL_FETCH_TIMEOUT_S: per download attempt
    metrics_port: int = 0  # ZEROLABEL_METRICS_PORT: a worker's Prometheus port; 0: none
    metrics_host: str = "127.0.0.1"  # ZEROLABEL_METRICS_HOST: the address it binds
    queue: QueueSettings = field(default_factory=QueueSettings)  # REDIS_URL, ZEROLABEL_QUEUE...

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvReader | None = None) -> WorkerSettings:
        """Build from ``env`` (default ``os.environ``); a malformed value fails here, at start."""
        read = env if isinstance(env, EnvReader) else EnvReader(env)
        offline = [read.flag("ZEROLABEL_OFFLINE"), read.flag("HF_HUB_OFFLINE")]
        settings = cls(
            queue=QueueSettings.from_env(read),
            **_present(
                backbone=read.env.get("ZEROLABEL_BACKBONE"),
                checkpoint=read.text("ZEROLABEL_CHECKPOINT"),
                cad_checkpoint=read.text("ZEROLABEL_CAD_CHECKPOINT"),
                fitted=read.text("ZEROLABEL_FITTED"),
                models_dir=read.text("ZEROLABEL_MODELS_DIR"),
                worker_models=read.integer("ZEROLABEL_WORKER_MODELS", minimum=1),
                weights_tag=read.text("ZEROLABEL_WEIGHTS_TAG"),
                backbone_kwargs=read.json_object("ZEROLABEL_BACKBONE_KWARGS"),
                pos_embed=read.env.get("ZEROLABEL_POS_EMBED"),
                offline=any(offline) or None,
                device=read.env.get("ZEROLABEL_DEVICE"),
                half=read.flag("ZEROLABEL_HALF"),
                precision=read.text("ZEROLABEL_PRECISION"),
                compile_mode=_compile_mode(read.text("ZEROLABEL_COMPILE")),
                method=read.env.get("ZEROLABEL_METHOD"),
                max_side=read.integer(
                    "ZEROLABEL_MAX_SIDE", minimum=0, note=" (0 means full resolution)"
                ),
                batch_size=read.integer("ZEROLABEL_BATCH_SIZE"),  # checked by validate()
                worker_batch=read.integer("ZEROLABEL_WORKER_BATCH", minimum=1),
                feature_cache_mb=read.integer("ZEROLABEL_FEATURE_CACHE_MB", minimum=0),
                max_image_bytes=read.integer("ZEROLABEL_MAX_IMAGE_BYTES", minimum=1),
                max_image_pixels=read.integer("ZEROLABEL_MAX_IMAGE_PIXELS", minimum=1),
                fetch_timeout_s=read.number(
                    "ZEROLABEL_FETCH_TIMEOUT_S", positive=True, unit="seconds"
                ),
                metrics_port=_port(read, "ZEROLABEL_METRICS_PORT"),
                metrics_host=read.text("ZEROLABEL_METRICS_HOST"),
                **_fetch_fields(read),
            ),
        )
        settings.validate()
        return settings

    def ls_sites(self) -> LabelStudioSites:
        """The configured Label Studio (``LABEL_STUDIO_URL`` and its aliases).

        The only places the Label Studio token goes, and the only hostnames ``/setup`` may name.

        Raises:
            ConfigError: a URL credentials may not go to, or aliases without a Label Studio URL.
        """
        return LabelStudioSites.configure(self.ls_url, self.ls_aliases)

    @property
    def weights(self) -> str:
        """How model_version names the weights: the tag, else the checkpoint file name, else hub."""
        if self.weights_tag:
            return self.weights_tag
        return os.path.basename(self.checkpoint) if self.checkpoint else "hub"

    def spec(self, **overrides: Any) -> DiscoverySpec:
        """The discovery spec these settings describe, with per-request overrides.

        ``detector`` (a file name of ``ZEROLABEL_MODELS_DIR``, checked by the caller) is the
        detector of method ``cad`` instead of ``ZEROLABEL_CAD_CHECKPOINT``; ``fitted`` likewise
        replaces ``ZEROLABEL_FITTED``, and ``checkpoint`` (adapted weights) the backbone's
        ``ZEROLABEL_CHECKPOINT``: the spec's weights are its name.
        """
        detector = overrides.pop("detector", None)
        checkpoint = overrides.pop("checkpoint", None)
        fields: dict[str, Any] = {
            "method": self.method,
            "backbone": self.backbone,
            "weights": self.weights,
            "max_side": self.max_side,
            "pos_embed": self.pos_embed,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        info = methods.get(str(fields["method"]))
        if checkpoint:
            if info.kind is not MethodKind.FEATURES:
                raise ConfigError(f'method {info.name!r} runs no backbone: drop "checkpoint"')
            fields["weights"] = checkpoint
        if info.kind is MethodKind.DETECTOR:
            # A detector stands in for the backbone: the spec names it and its checkpoint.
            if not detector and not self.cad_checkpoint:
                raise ConfigError(
                    f"method {info.name!r} needs ZEROLABEL_CAD_CHECKPOINT (or --cad-checkpoint): "
                    "the file zerolabel train-cad wrote; or a project's extra param "
                    '"detector" naming one of ZEROLABEL_MODELS_DIR'
                )
            weights = detector or os.path.basename(str(self.cad_checkpoint))
            fields |= {"backbone": info.name, "weights": weights}
        elif detector:
            raise ConfigError(
                f'a detector is served by method "cad", not {info.name!r}: drop "detector" or '
                'set "method": "cad"'
            )
        elif info.fitted is not None and self.fitted and "fitted" not in overrides:
            fields["fitted"] = os.path.basename(self.fitted)  # methods without one ignore it
        try:
            return DiscoverySpec(**fields)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None

    def validate(self) -> None:
        """Refuse settings no process could serve (also after CLI overrides).

        Raises:
            ConfigError: an unknown method or position rule, a batch size below 1, a negative
                max side, a Label Studio URL or alias credentials may not go to.
        """
        self.spec()  # unknown method, negative max side
        self.ls_sites()
        if self.pos_embed not in ("dino", "timm"):
            raise ConfigError(f"ZEROLABEL_POS_EMBED={self.pos_embed!r}: use 'dino' or 'timm'")
        if self.precision not in _PRECISIONS:
            raise ConfigError(
                f"ZEROLABEL_PRECISION / --precision={self.precision!r}: use one of "
                f"{', '.join(_PRECISIONS)}"
            )
        if self.compile_mode not in (None, *_COMPILE_MODES):
            raise ConfigError(
                f"ZEROLABEL_COMPILE / --compile={self.compile_mode!r}: use off or one of "
                f"{', '.join(_COMPILE_MODES)}"
            )
        if self.batch_size < 1:
            raise ConfigError(
                f"ZEROLABEL_BATCH_SIZE / --batch-size must be at least 1, got {self.batch_size}"
            )


_PRECISIONS = ("fp32", "fp16", "bf16")  # the keys of zerolabel.vit.backbone.PRECISIONS
_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _compile_mode(text: str | None) -> str | None:
    """``off`` (or unset) -> None; any other text is a mode, checked by ``validate``."""
    return None if text is None or text.strip().lower() in ("off", "false", "0") else text.strip()


def _port(read: EnvReader, name: str) -> int | None:
    port = read.integer(name, minimum=0, note=" (0 turns it off)")
    if port is not None and port > 65535:
        raise ConfigError(f"{name}={port} is not a TCP port (1 to 65535, or 0 for none)")
    return port


def _fetch_fields(read: EnvReader) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    ls_url = read.text(LS_URL_SETTING)
    if ls_url:
        fields["ls_url"] = ls_url.rstrip("/")
    fields["ls_token"] = read.text(LS_TOKEN_SETTING)
    aliases = read.text(LS_ALIASES_SETTING)
    if aliases:
        fields["ls_aliases"] = tuple(a.strip() for a in aliases.split(",") if a.strip())
    hosts = read.text(ALLOWED_HOSTS_SETTING)
    if hosts:
        fields["allowed_hosts"] = parse_allowed_hosts(hosts)
    roots = read.text("ZEROLABEL_LOCAL_ROOTS")
    if roots:
        fields["local_roots"] = tuple(r for r in roots.split(os.pathsep) if r)
    fields["ls_media"] = read.text("ZEROLABEL_LABEL_STUDIO_MEDIA")
    fields["ls_files_root"] = read.text("ZEROLABEL_LABEL_STUDIO_FILES")
    return fields


@dataclass(frozen=True)
class BackendSettings:
    """What the backend process needs; built once in the entry point."""

    discovery: WorkerSettings = field(default_factory=WorkerSettings)
    wait_timeout_s: float = 30.0  # ZEROLABEL_WAIT_TIMEOUT_S: how long /predict waits for jobs
    label: str | None = None  # ZEROLABEL_LABEL: label value to use (default: "object"-like)
    # BASIC_AUTH_USER and BASIC_AUTH_PASS: required on every route but /health when set.
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    max_request_bytes: int = 16 * 2**20  # ZEROLABEL_MAX_REQUEST_BYTES: larger bodies get a 413
    http_threads: int = 64  # ZEROLABEL_HTTP_THREADS: requests served at once (/predict waits)
    log_level: str = "INFO"  # ZEROLABEL_LOG_LEVEL: DEBUG, INFO, WARNING, ERROR
    # PROMETHEUS_MULTIPROC_DIR (prometheus_client's own): /metrics sums every process's files.
    prometheus_multiproc_dir: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | EnvReader | None = None) -> BackendSettings:
        """Build from ``env`` (default ``os.environ``); a malformed value fails here, at start."""
        read = env if isinstance(env, EnvReader) else EnvReader(env)
        settings = cls(
            discovery=WorkerSettings.from_env(read),
            **_present(
                wait_timeout_s=read.number("ZEROLABEL_WAIT_TIMEOUT_S", unit="seconds"),
                label=read.text("ZEROLABEL_LABEL"),
                basic_auth=_basic_auth(read),
                max_request_bytes=read.integer("ZEROLABEL_MAX_REQUEST_BYTES", minimum=1024),
                http_threads=read.integer("ZEROLABEL_HTTP_THREADS", minimum=1),
                log_level=_log_level(read.text("ZEROLABEL_LOG_LEVEL")),
                prometheus_multiproc_dir=_multiproc_dir(read),
            ),
        )
        if read.flag("ZEROLABEL_REQUIRE_BASIC_AUTH") and settings.basic_auth is None:
            raise ConfigError(
                "ZEROLABEL_REQUIRE_BASIC_AUTH is on but BASIC_AUTH_USER and BASIC_AUTH_PASS are "
                "not set: choose a user and password, and enter them in Label Studio's Connect "
                "Model form"
            )
        return settings


def _multiproc_dir(read: EnvReader) -> str | None:
    """prometheus_client writes to the folder whenever the variable exists, even empty."""
    name = "PROMETHEUS_MULTIPROC_DIR"
    if name not in read.env:
        return None
    folder = read.env[name]
    if not folder or not Path(folder).is_dir():
        raise ConfigError(
            f"{name}={folder!r} is not a folder: create an empty one for the backend's "
            "processes to share (emptied before each start), or unset it for one process"
        )
    return folder


def _log_level(value: str | None) -> str | None:
    if value is None:
        return None
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"ZEROLABEL_LOG_LEVEL={value!r}: use DEBUG, INFO, WARNING or ERROR")
    return level


def _basic_auth(read: EnvReader) -> tuple[str, str] | None:
    user, password = read.text("BASIC_AUTH_USER"), read.text("BASIC_AUTH_PASS")
    if (user is None) != (password is None):
        raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
    if user is not None and ":" in user:
        raise ConfigError("BASIC_AUTH_USER cannot contain ':' (HTTP basic auth splits on it)")
    return (user, password) if user is not None and password is not None else None
