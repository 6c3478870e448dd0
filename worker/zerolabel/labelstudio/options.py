"""Per-project options: the "Extra params" JSON of a Label Studio ML backend connection."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerolabel import methods, model_files
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.tasks import SHAPES
from zerolabel.methods import MethodKind
from zerolabel.settings import BackendSettings, WorkerSettings

#: Method parameters a project may set at the top level of its extra params (any method's; the
#: spec then checks them against the method it runs).
METHOD_PARAMS = methods.param_names()
_SPEC_OPTIONS = frozenset({"method", "backbone", "max_side", "square", "masks", "refine", "preset"})
_MODEL_FILES = {"detector": "detector", "fitted": "fitted file", "checkpoint": "checkpoint"}
"""Extra params naming a file of ``ZEROLABEL_MODELS_DIR`` (:mod:`zerolabel.model_files`): the
detector of method ``cad``, the fitted file of a method that reads one, the backbone weights
``zerolabel adapt`` wrote; how messages call it."""

MODEL_KEYS = frozenset(
    {"method", "backbone", "max_side", "square", "refine", "preset", "params", *_MODEL_FILES}
    | METHOD_PARAMS
)
"""The extra params that choose the model (``zerolabel use`` replaces them, and keeps the others:
``label``, ``masks``...)."""

MAX_EXTRA_PARAMS_BYTES = 16 * 1024
"""The largest Extra params a project may have, as JSON: the backend remembers them per project."""

MAX_LABEL_CHARS = 256
"""The longest ``label`` option (a label value of the labeling config)."""

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
"""Bounds of a project's ``max_side`` and ``square`` in pixels, before its backbone is known;
:data:`PROJECT_MAX_PATCHES` then bounds the input by the backbone's patches. Full resolution
(``max_side`` 0) and larger inputs are the operator's choice, through ``ZEROLABEL_MAX_SIDE``."""

PROJECT_MAX_PATCHES = 4096
"""The most patches a project's input may give its backbone (a 64 x 64 grid: 1024 px at
ViT-S/16, 512 px at ViT-S/8, 896 px at ViT-S/14). Memory and time grow with the square of the
patch count (attention, and the patch affinity matrices of the methods); the README's worker
memory table is measured at this bound. A project's preset or method default beyond it is
capped to it; a ``max_side`` or ``square`` the project gives beyond it is refused."""


def patch_size_of(backbone: str) -> int:
    """The patch size in pixels a backbone name states (``dino_vits16``: 16,
    ``vit_small_patch14_dinov2``: 14); 8, the smallest in use, when the name states none."""
    found = _PATCH_IN_NAME.search(backbone)
    return int(found.group(1)) if found else 8


_PATCH_IN_NAME = re.compile(r"(?:patch|vit[a-z])(\d+)")


def project_side_limit(backbone: str) -> int:
    """The longest side, in pixels, of a square input within :data:`PROJECT_MAX_PATCHES`."""
    return patch_size_of(backbone) * math.isqrt(PROJECT_MAX_PATCHES)


@dataclass(frozen=True)
class ProjectOptions:
    """Per-project choices from the ML backend's extra params (JSON object in Label Studio).

    Example: ``{"method": "maskcut", "max_side": 640, "tau": 0.2, "label": "object"}``. A
    detector or fitted file of ``ZEROLABEL_MODELS_DIR`` is named by its file name:
    ``{"method": "cad", "detector": "cad-<digest>.pt"}``, ``{"method": "rps", "fitted":
    "rps-<digest>.pt"}``.
    Method parameters go at the top level or under ``"params"``; either way they are checked
    against the method when the spec is built (:meth:`spec`), so ``/setup`` refuses a project
    whose options no worker could run.
    """

    spec_overrides: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # "detector", "fitted": file names
    shapes: str = "auto"  # how objects are sent: one of SHAPES (labelstudio.tasks)

    @classmethod
    def parse(cls, raw: str | Mapping[str, Any] | None) -> ProjectOptions:
        data = _as_mapping(raw)
        known = _SPEC_OPTIONS | METHOD_PARAMS | {"label", "params", "shapes"} | set(_MODEL_FILES)
        unknown = set(data) - known
        if unknown:
            allowed = ", ".join(sorted(known))
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
        if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL_CHARS):
            raise ConfigError(
                f'extra param "label" must be a string of at most {MAX_LABEL_CHARS} characters, '
                f"got {str(label)[:40]!r}{'...' if len(str(label)) > 40 else ''}"
            )
        shapes = data.get("shapes", "auto")
        if shapes not in SHAPES:
            raise ConfigError(
                f'extra param "shapes" must be one of {", ".join(map(json.dumps, SHAPES))}, got '
                f"{shapes!r}"
            )
        files = _model_files(data)
        return cls(spec_overrides=spec, params=params, label=label, files=files, shapes=shapes)

    def pixel_masks(self, settings: BackendSettings) -> bool:
        """Whether the project's method gives masks that follow the image's edges (refined to
        pixels, or a detector's); what ``"shapes": "auto"`` sends as brushes.

        Raises:
            ConfigError: the options or the environment name an unknown method.
        """
        method = str(self.spec_overrides.get("method") or settings.discovery.method)
        return methods.get(method).pixel_masks(self.spec_overrides.get("refine"))

    def spec(
        self, settings: BackendSettings, *, masks: bool, shapes: str = "both"
    ) -> DiscoverySpec:
        """The project's spec: environment defaults, then these options.

        ``masks`` and ``shapes`` say what the project's labeling config takes (from its
        :class:`~zerolabel.labelstudio.tasks.Target`); a ``"masks"`` option overrides ``masks``.

        Raises:
            ConfigError: the options name an unknown method, or parameters the method does not
                have or values of the wrong type (the message lists the allowed parameters).
        """
        overrides = {"masks": masks, "shapes": shapes, **self.spec_overrides}
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
        method = str(overrides.get("method") or settings.discovery.method)
        backbone_name = str(overrides.get("backbone") or settings.discovery.backbone)
        overrides |= _named_files(self.files, method, settings.discovery, backbone_name)
        limit = project_side_limit(str(overrides.get("backbone") or settings.discovery.backbone))
        if _unbounded_paper_input(overrides, method, settings.discovery):
            overrides["max_side"] = limit
        spec = settings.discovery.spec(**overrides)
        side = _input_side(spec)
        if side is None or side <= limit:
            return spec
        given = next((n for n in ("square", "max_side") if self.spec_overrides.get(n)), None)
        if given is not None:
            patch = patch_size_of(spec.backbone)
            raise ConfigError(
                f'extra param "{given}" {side} px gives up to {(side // patch) ** 2} patches of '
                f"{spec.backbone} ({patch} px each), more than the {PROJECT_MAX_PATCHES} a "
                f"project may ask for: use at most {limit} px (larger inputs: the workers' "
                "ZEROLABEL_MAX_SIDE)"
            )
        if settings.discovery.max_side is not None:
            return spec  # the operator's size
        return settings.discovery.spec(**{**overrides, "max_side": limit})


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
    if "preset" in spec and spec["preset"] not in methods.PRESETS:
        raise ConfigError(
            f'extra param "preset" must be one of {", ".join(map(json.dumps, methods.PRESETS))}, '
            f"got {spec['preset']!r}"
        )


def _input_side(spec: DiscoverySpec) -> int | None:
    """The longest side a ViT method's input can have under ``spec``; None: full resolution,
    or a detector (which sizes its input itself)."""
    if methods.get(spec.method).kind is not MethodKind.FEATURES:
        return None
    return spec.square or spec.effective_max_side()


def _unbounded_paper_input(
    overrides: Mapping[str, Any], method: str, settings: WorkerSettings
) -> bool:
    """Whether a project's preset ``paper`` would run its ViT method at full resolution with
    no size the project or the operator set (:data:`PROJECT_MAX_PATCHES` bounds it instead)."""
    info = methods.get(method)
    if overrides.get("preset") != "paper" or info.kind is not MethodKind.FEATURES:
        return False
    if any(overrides.get(name) is not None for name in ("max_side", "square")):
        return False
    paper = info.paper_input
    if settings.max_side is not None or paper is None or paper.square is not None:
        return False
    return paper.max_side is None or paper.max_side > PROJECT_SIDE_RANGE[1]


def _model_files(data: Mapping[str, Any]) -> dict[str, str]:
    """The model files the extra params name, each a bare file name of its kind's form."""
    files = {}
    try:
        if "detector" in data:
            files["detector"] = model_files.check_detector_name(data["detector"])
        if "fitted" in data:
            files["fitted"] = model_files.check_fitted_name(data["fitted"])
        if "checkpoint" in data:
            files["checkpoint"] = model_files.check_checkpoint_name(data["checkpoint"])
    except ConfigError as exc:
        raise ConfigError(f"extra params: {exc}") from None
    return files


def _named_files(
    files: Mapping[str, str], method: str, settings: WorkerSettings, backbone: str
) -> dict[str, str]:
    """The spec overrides of the files a project names, once they fit its method and are in the
    models folder (when this process sees it; else the workers say so per task).

    Raises:
        ConfigError: a fitted file for a method that reads none or another kind, adapted
            weights for a detector or of another backbone, no models folder, or a file it does
            not hold (the message lists those it holds).
    """
    info = methods.get(method)
    if "checkpoint" in files and info.kind is not MethodKind.FEATURES:
        raise ConfigError(
            f'extra param "checkpoint" holds backbone weights, and method {method!r} runs no '
            "backbone: drop it, or choose a ViT method"
        )
    if "fitted" in files:
        if info.fitted is None:
            raise ConfigError(
                f'extra param "fitted": method {method!r} reads no fitted file: drop it, or '
                "choose a method that reads one (rps, found)"
            )
        model_files.check_fitted_name(files["fitted"], info.fitted)
    if "detector" in files and info.kind is not MethodKind.DETECTOR:
        raise ConfigError(
            f'extra param "detector" is the detector of method "cad", not of {method!r}: drop '
            'it, or set "method": "cad"'
        )
    defaults = {
        "detector": settings.cad_checkpoint,
        "fitted": settings.fitted,
        "checkpoint": settings.checkpoint,
    }
    for key, name in files.items():
        default = defaults[key]
        if default is not None and os.path.basename(default) == name:
            continue  # the workers' own default file
        folder = settings.models_dir
        if folder is None:
            raise ConfigError(
                f'extra param "{key}" {name!r} needs {model_files.MODELS_DIR_SETTING}: the '
                "folder backend and workers load the files projects name from"
            )
        if os.path.isdir(folder):
            found = model_files.locate(folder, name, _MODEL_FILES[key])
            if key == "checkpoint":
                _check_adapted_backbone(found, backbone)
    return dict(files)


def _check_adapted_backbone(path: Path, backbone: str) -> None:
    """Adapted weights whose metadata (``adapted-<digest>.json`` beside them) names another
    backbone than the project's are refused; without metadata the workers check the weights."""
    try:
        trained = json.loads(path.with_suffix(".json").read_text()).get("backbone")
    except (OSError, ValueError, AttributeError):
        return
    if isinstance(trained, str) and trained != backbone:
        raise ConfigError(
            f'extra param "checkpoint" {path.name!r} holds weights of backbone {trained!r}, '
            f'and the project runs {backbone!r}: set "backbone": "{trained}"'
        )


def extra_params_object(raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A connection's extra params (JSON text, an object or nothing) as a dict.

    Raises:
        ConfigError: text that is not JSON, or JSON that is not an object.
    """
    return dict(_as_mapping(raw))


def _as_mapping(raw: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        if len(raw.encode()) > MAX_EXTRA_PARAMS_BYTES:
            raise _too_big(len(raw.encode()))
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"extra params are not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError('extra params must be a JSON object, e.g. {"method": "maskcut"}')
    try:
        size = len(json.dumps(raw).encode())
    except (TypeError, ValueError, RecursionError):
        raise ConfigError("extra params must be plain JSON values") from None
    if size > MAX_EXTRA_PARAMS_BYTES:
        raise _too_big(size)
    return raw


def _too_big(size: int) -> ConfigError:
    return ConfigError(
        f"extra params of {size} bytes: at most {MAX_EXTRA_PARAMS_BYTES} are accepted (a few "
        "keys and numbers are a few hundred)"
    )
