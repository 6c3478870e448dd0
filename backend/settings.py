"""Backend settings and per-project options.

The backend reads the same ZEROLABEL_* discovery variables as the workers (so both derive the
same model_version) plus its own, documented in docker/zerolabel.env.example.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.contract import DiscoverySpec
from worker.errors import ConfigError
from worker.settings import WorkerSettings

#: Method parameters a project may set at the top level of its extra params.
METHOD_PARAMS = frozenset(
    {"k_patches", "tau", "eps", "max_objects", "min_area_frac", "max_iou_with_previous"}
)
_SPEC_OPTIONS = frozenset({"method", "backbone", "max_side", "square", "masks"})


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


@functools.cache
def get_settings() -> BackendSettings:
    return BackendSettings.from_env()


@dataclass(frozen=True)
class ProjectOptions:
    """Per-project choices from the ML backend's extra params (JSON object in Label Studio).

    Example: ``{"method": "maskcut", "max_side": 640, "tau": 0.2, "label": "object"}``.
    """

    spec_overrides: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any] | None) -> ProjectOptions:
        data = _as_mapping(raw)
        unknown = set(data) - _SPEC_OPTIONS - METHOD_PARAMS - {"label", "params"}
        if unknown:
            allowed = ", ".join(sorted(_SPEC_OPTIONS | METHOD_PARAMS | {"label", "params"}))
            raise ConfigError(f"unknown extra params {sorted(unknown)}: allowed keys are {allowed}")
        params = dict(data.get("params") or {})
        params.update({k: v for k, v in data.items() if k in METHOD_PARAMS})
        spec = {k: v for k, v in data.items() if k in _SPEC_OPTIONS}
        return cls(spec_overrides=spec, params=params, label=data.get("label"))

    def spec(self, settings: BackendSettings, *, masks: bool) -> DiscoverySpec:
        """The project's spec: environment defaults, then these options."""
        overrides = {"masks": masks, **self.spec_overrides}
        if self.params:
            overrides["params"] = self.params
        return settings.discovery.spec(**overrides)


def _as_mapping(raw: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"extra params are not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError('extra params must be a JSON object, e.g. {"method": "maskcut"}')
    return raw
