"""Per-project options: the "Extra params" JSON of a Label Studio ML backend connection."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.settings import BackendSettings

#: Method parameters a project may set at the top level of its extra params (any method's; the
#: spec then checks them against the method it runs).
METHOD_PARAMS = methods.param_names()
_SPEC_OPTIONS = frozenset({"method", "backbone", "max_side", "square", "masks", "refine"})

PROJECT_BACKBONES = (
    "dino_vits16",
    "dino_vits8",
    "dino_vitb16",
    "dino_vitb8",
    "dinov2_vits14",
    "dora_vits16",
)
"""Backbones a project may ask for (the named ones of :data:`zerolabel.vit.backbone.BACKBONES`);
any other timm name only through the workers' own ``ZEROLABEL_BACKBONE``."""

PROJECT_SIDE_RANGE = (64, 2048)
"""Bounds of a project's ``max_side`` and ``square`` in pixels. A request decides them, so they
stay where one image fits a worker's memory; full resolution (``max_side`` 0) and larger inputs
are the operator's choice, through ``ZEROLABEL_MAX_SIDE``."""


@dataclass(frozen=True)
class ProjectOptions:
    """Per-project choices from the ML backend's extra params (JSON object in Label Studio).

    Example: ``{"method": "maskcut", "max_side": 640, "tau": 0.2, "label": "object"}``.
    Method parameters go at the top level or under ``"params"``; either way they are checked
    against the method when the spec is built (:meth:`spec`), so ``/setup`` refuses a project
    whose options no worker could run.
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
        nested = data.get("params")
        nested = {} if nested is None else nested
        if not isinstance(nested, Mapping):
            raise ConfigError(
                'extra param "params" must be a JSON object of method parameters, e.g. '
                '{"params": {"tau": 0.2}}'
            )
        params = dict(nested)
        params.update({k: v for k, v in data.items() if k in METHOD_PARAMS})
        spec = {k: v for k, v in data.items() if k in _SPEC_OPTIONS}
        _check_spec_options(spec)
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            raise ConfigError(f'extra param "label" must be a string, got {label!r}')
        return cls(spec_overrides=spec, params=params, label=label)

    def spec(self, settings: BackendSettings, *, masks: bool) -> DiscoverySpec:
        """The project's spec: environment defaults, then these options.

        Raises:
            ConfigError: the options name an unknown method, or parameters the method does not
                have or values of the wrong type (the message lists the allowed parameters).
        """
        overrides = {"masks": masks, **self.spec_overrides}
        backbone = overrides.get("backbone")
        if backbone is not None and backbone not in (
            *PROJECT_BACKBONES,
            settings.discovery.backbone,
        ):
            raise ConfigError(
                f'extra param "backbone" {backbone!r} is not served: use one of '
                f"{', '.join(PROJECT_BACKBONES)} (or the workers' ZEROLABEL_BACKBONE)"
            )
        if self.params:
            overrides["params"] = self.params
        return settings.discovery.spec(**overrides)


def _check_spec_options(spec: Mapping[str, Any]) -> None:
    """Types and bounds of the spec options a project sets (a request decides them)."""
    low, high = PROJECT_SIDE_RANGE
    for name in ("max_side", "square"):
        value = spec.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f'extra param "{name}" must be a whole number of pixels from {low} to {high}, '
                f"got {value!r} (full resolution and larger inputs: ZEROLABEL_MAX_SIDE)"
            )
    for name in ("method", "backbone"):
        if name in spec and not isinstance(spec[name], str):
            raise ConfigError(f'extra param "{name}" must be a string, got {spec[name]!r}')
    for name in ("masks", "refine"):
        if name in spec and not isinstance(spec[name], bool):
            raise ConfigError(f'extra param "{name}" must be true or false, got {spec[name]!r}')


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
