"""The discovery methods by name: parameters, defaults, bounds and kind (standard library only).

Each method is written down here once. The backend, the contract and the CLI check a request
against this table before anything is queued or loaded, so a misspelt or ill-typed parameter is
refused where it is typed, with the allowed parameters named. :mod:`zerolabel.discovery` binds
the feature methods to their functions; a unit test keeps this table and their keyword arguments
(names, types, defaults) identical.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from zerolabel.errors import ConfigError

ParamType = Literal["int", "float", "bool"]
ParamValue = int | float | bool

TRUE_WORDS: frozenset[str] = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: frozenset[str] = frozenset({"0", "false", "no", "off"})
"""How a boolean is spelt in a setting or on the command line (any case); anything else, the
empty word included, is refused rather than read as False."""


class MethodKind(enum.Enum):
    """What runs a method."""

    FEATURES = "features"  # a pure function of ViT patch keys (zerolabel.discovery)
    DETECTOR = "detector"  # a trained detector served like a method (zerolabel.cad)
    PROMPT = "prompt"  # keys and an annotator's clicks (zerolabel.discovery.prompts)


@dataclass(frozen=True)
class Param:
    """One keyword argument of a method, with its type, default and allowed range."""

    name: str
    type: ParamType
    default: ParamValue
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False  # ``value > minimum`` instead of ``value >= minimum``

    def describe(self) -> str:
        """E.g. ``k_patches (int >= 1, default 100)``."""
        return f"{self.name} ({self.type}{self._range()}, default {self.default!r})"

    def _range(self) -> str:
        low = "" if self.minimum is None else _number(self.minimum)
        high = "" if self.maximum is None else _number(self.maximum)
        if low and high:
            return f" in {'(' if self.exclusive_minimum else '['}{low}, {high}]"
        if low:
            return f" {'>' if self.exclusive_minimum else '>='} {low}"
        return f" <= {high}" if high else ""

    def check(self, value: object) -> ParamValue:
        """``value`` as this parameter's type.

        Raises:
            ValueError: a value of another type (ints are accepted for floats) or out of range.
        """
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be {_article(self.type)}, got {value!r}")
        if self.type == "int" and not isinstance(value, int):
            raise ValueError(f"must be an int, got {value!r}")
        number: int | float = value if self.type == "int" else float(value)
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        if self.minimum is not None and (
            number < self.minimum or (self.exclusive_minimum and number == self.minimum)
        ):
            raise ValueError(f"must be{self._range()}, got {value!r}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"must be{self._range()}, got {value!r}")
        return number

    def parse(self, text: str) -> ParamValue:
        """A command-line string as this parameter's type, then checked.

        Raises:
            ValueError: text that does not spell a value of this type, or one out of range.
        """
        cleaned = text.strip()
        if self.type == "bool":
            if cleaned.lower() not in TRUE_WORDS | FALSE_WORDS:
                raise ValueError(f"must be true or false, got {text!r}")
            return self.check(cleaned.lower() in TRUE_WORDS)
        try:
            value: int | float = int(cleaned) if self.type == "int" else float(cleaned)
        except ValueError:
            raise ValueError(f"must be {_article(self.type)}, got {text!r}") from None
        return self.check(value)


PRESETS: tuple[str, ...] = ("default", "paper")
"""Names of the input settings a spec may ask for: ``default``, this product's per method (the
longer side capped, see :attr:`MethodInfo.default_max_side`), or ``paper``, the input the
method's authors published their numbers with (:attr:`MethodInfo.paper_input`)."""


@dataclass(frozen=True)
class InputSetting:
    """How a method's images are sized for the network.

    Example: ``InputSetting(square=480)`` is MaskCut's authors' 480 x 480 input;
    ``InputSetting(crop=True)`` the full-resolution image cut to whole patches, as DSS's
    authors feed it.
    """

    max_side: int | None = None  # longer-side cap in pixels; None: full resolution
    square: int | None = None  # resized to square x square (LANCZOS), aspect ignored
    crop: bool = False  # the bottom/right remainder below a whole patch is cut off, not padded


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: how it runs, its parameters and its default image size."""

    name: str
    kind: MethodKind
    params: tuple[Param, ...]
    default_max_side: int | None  # longer-side cap when the spec gives none; None: full size
    summary: str
    inputs: frozenset[str] = frozenset()  # per-image inputs besides the keys: "attention"
    fitted: str | None = None  # kind of fitted file (zerolabel.fitted) the method can use
    fitted_required: bool = False  # the method cannot run without that file
    # Pixel refinement of the method's masks (zerolabel.refine) when the spec leaves it unset:
    # True where the dense CRF improves the edges (MaskCut and the other multi-object methods),
    # False where it stays off unless asked for, None where the masks are pixel masks already.
    refine_default: bool | None = False
    # The input of the authors' published setting (preset "paper"); None: none registered.
    paper_input: InputSetting | None = None

    def preset_input(self, preset: str) -> InputSetting:
        """The input setting of ``preset`` (one of :data:`PRESETS`) for this method.

        Raises:
            ConfigError: an unknown preset, or ``paper`` for a method that has none registered.
        """
        if preset == "default":
            return InputSetting(max_side=self.default_max_side)
        if preset != "paper":
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        if self.paper_input is None:
            raise ConfigError(
                f"method {self.name!r} has no paper preset: its authors' input is not "
                'registered; use preset "default" (or set max_side / square)'
            )
        return self.paper_input

    def check_fitted(self, fitted: str | None) -> None:
        """Refuse a fitted file this method cannot use, or a missing one it needs.

        Raises:
            ConfigError: naming the method and the setting that provides the file.
        """
        if fitted is not None and self.fitted is None:
            raise ConfigError(
                f"method {self.name!r} takes no fitted file, got {fitted!r}: "
                "unset ZEROLABEL_FITTED (or --fitted) for it"
            )
        if fitted is None and self.fitted_required:
            raise ConfigError(
                f"method {self.name!r} needs a fitted {self.fitted} file: set "
                f"ZEROLABEL_FITTED (or --fitted) to the file zerolabel wrote for it"
            )

    def pixel_masks(self, refine: bool | None) -> bool:
        """Whether this method's masks follow the image's edges: a detector's masks, or masks
        refined to pixels (``refine``, else the method's default); not a patch-grid cut."""
        if self.refine_default is None:
            return True
        return self.refine_default if refine is None else refine

    def refines(self, requested: bool | None) -> bool:
        """Whether this method's masks are refined to pixels: ``requested``, else the default.

        Raises:
            ConfigError: refinement asked for a method whose masks are pixel masks already.
        """
        if self.refine_default is None:
            if requested:
                raise ConfigError(
                    f"method {self.name!r} gives pixel masks already: drop refine (--refine) for it"
                )
            return False
        return self.refine_default if requested is None else requested

    def param(self, name: str) -> Param:
        """The parameter called ``name``.

        Raises:
            ConfigError: the method has no such parameter (the message lists those it has).
        """
        for param in self.params:
            if param.name == name:
                return param
        raise ConfigError(
            f"method {self.name!r} has no parameter {name!r}; its parameters are {self.allowed()}"
        )

    def allowed(self) -> str:
        """The parameters with their types, ranges and defaults, for error messages."""
        return ", ".join(p.describe() for p in self.params) or "none"

    def defaults(self) -> dict[str, ParamValue]:
        """Every parameter at its default."""
        return {p.name: p.default for p in self.params}

    def check_params(self, params: Mapping[str, object]) -> dict[str, ParamValue]:
        """``params`` with each value checked and typed (ints become floats where floats go).

        Raises:
            ConfigError: an unknown parameter, or a value of the wrong type or out of range;
                the message names the allowed parameters with their types.
        """
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"params of method {self.name!r} must be a mapping of name to value, got "
                f"{type(params).__name__}; its parameters are {self.allowed()}"
            )
        return {str(name): self._checked(str(name), value) for name, value in params.items()}

    def parse_params(self, texts: Mapping[str, str]) -> dict[str, ParamValue]:
        """Command-line ``name -> text`` pairs typed by the parameters' types.

        Raises:
            ConfigError: as :meth:`check_params`.
        """
        parsed: dict[str, ParamValue] = {}
        for name, text in texts.items():
            try:
                parsed[name] = self.param(name).parse(text)
            except ConfigError:
                raise
            except ValueError as exc:
                raise self._bad_value(name, exc) from None
        return parsed

    def _checked(self, name: str, value: object) -> ParamValue:
        try:
            return self.param(name).check(value)
        except ConfigError:
            raise
        except ValueError as exc:
            raise self._bad_value(name, exc) from None

    def _bad_value(self, name: str, exc: ValueError) -> ConfigError:
        return ConfigError(
            f"parameter {name!r} of method {self.name!r} {exc}; its parameters are {self.allowed()}"
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _article(type_name: ParamType) -> str:
    return "an int" if type_name == "int" else f"a {type_name}"


_PARAMS: dict[str, tuple[Param, ...]] = {
    # Every parameter is bounded: the worst job a request may ask for is the one
    # bench/bench_bounds.py measures (README: worst-case job time and worker memory).
    "lost": (Param("k_patches", "int", 100, minimum=1, maximum=4096),),
    "tokencut": (
        Param("tau", "float", 0.2, minimum=-1.0, maximum=1.0),
        Param("eps", "float", 1e-5, minimum=0.0, maximum=1.0, exclusive_minimum=True),
    ),
    "maskcut": (
        Param("tau", "float", 0.15, minimum=-1.0, maximum=1.0),
        Param("eps", "float", 1e-5, minimum=0.0, maximum=1.0, exclusive_minimum=True),
        Param("max_objects", "int", 3, minimum=0, maximum=20),
        Param("min_area_frac", "float", 0.01, minimum=0.0, maximum=1.0),
        Param("max_iou_with_previous", "float", 0.5, minimum=0.0, maximum=1.0),
    ),
    "cad": (
        Param("score_threshold", "float", 0.5, minimum=0.0, maximum=1.0),
        Param("max_detections", "int", 100, minimum=1, maximum=1000),
    ),
    "found": (Param("tau", "float", 0.3, minimum=-1.0, maximum=1.0),),
    # negative: the threshold rps-fit picked from accepted boxes (fitted file), else 0.5
    "rps": (Param("threshold", "float", -1.0, minimum=-1.0, maximum=1.0),),
    "dinoseg": (
        Param("head", "int", 4, minimum=0, maximum=15),
        Param("mass", "float", 0.6, minimum=0.0, maximum=1.0, exclusive_minimum=True),
    ),
    "dss": (),
    "promerge": (
        Param("stride", "int", 4, minimum=4, maximum=64),
        Param("tau", "float", 0.2, minimum=-1.0, maximum=1.0),
        Param("min_background_frac", "float", 0.1, minimum=0.0, maximum=1.0),
        Param("min_component_ratio", "float", 0.5, minimum=0.0, maximum=1.0),
        Param("max_background_overlap", "float", 0.8, minimum=0.0, maximum=1.0),
        Param(
            "max_background_similarity",
            "float",
            0.1,
            minimum=-1.0,
            maximum=1.0,
            exclusive_minimum=True,
        ),
        Param("merge_overlap", "float", 0.5, minimum=0.0, maximum=1.0),
        Param("merge_min_overlap", "float", 0.1, minimum=0.0, maximum=1.0),
        Param("merge_similarity", "float", 0.1, minimum=-1.0, maximum=1.0),
        Param("max_objects", "int", 20, minimum=1, maximum=50),
    ),
}

METHODS: dict[str, MethodInfo] = {
    "lost": MethodInfo(
        "lost",
        MethodKind.FEATURES,
        _PARAMS["lost"],
        default_max_side=1024,
        summary="one box around the least-connected patch (Simeoni et al., 2021)",
        paper_input=InputSetting(),  # full resolution, zero-padded to whole patches
    ),
    "tokencut": MethodInfo(
        "tokencut",
        MethodKind.FEATURES,
        _PARAMS["tokencut"],
        default_max_side=1024,
        summary="one object from a normalized cut of the patch graph (Wang et al., 2022)",
        paper_input=InputSetting(),  # full resolution, zero-padded (LOST's evaluation code)
    ),
    "maskcut": MethodInfo(
        "maskcut",
        MethodKind.FEATURES,
        _PARAMS["maskcut"],
        default_max_side=480,  # the size MaskCut's authors used, aspect preserved
        summary="several objects from repeated normalized cuts (Wang et al., 2023)",
        refine_default=True,  # the authors' dense CRF is part of MaskCut
        paper_input=InputSetting(square=480),  # 480 x 480, resized with LANCZOS
    ),
    "cad": MethodInfo(
        "cad",
        MethodKind.DETECTOR,
        _PARAMS["cad"],
        default_max_side=None,  # the detector resizes its input itself
        summary="a class-agnostic detector trained with zerolabel train-cad",
        refine_default=None,  # Mask R-CNN masks are pixel masks already
        paper_input=InputSetting(),  # the detector resizes its input itself, as in training
    ),
    "found": MethodInfo(
        "found",
        MethodKind.FEATURES,
        _PARAMS["found"],
        default_max_side=1024,
        summary="one object, the complement of the background found from the CLS attention "
        "(Simeoni et al., 2023); a head from zerolabel train-found refines it",
        inputs=frozenset({"attention"}),
        fitted="found-head",
        fitted_required=False,
        paper_input=InputSetting(),  # full resolution, zero-padded (the authors' CorLoc code)
    ),
    "rps": MethodInfo(
        "rps",
        MethodKind.FEATURES,
        _PARAMS["rps"],
        default_max_side=1024,
        summary="one object along a dataset's foreground direction from zerolabel rps-fit "
        "(representer point selection, Song et al., 2023)",
        inputs=frozenset({"tokens"}),  # the last block's output tokens, the authors' features
        fitted="rps",
        fitted_required=True,
        # 224 x 224, the authors' fit input (their evaluation crops 224 of 256: a pre-label must
        # cover the whole image); their box rule comes with a fit of preset paper
        paper_input=InputSetting(square=224),
    ),
    "dinoseg": MethodInfo(
        "dinoseg",
        MethodKind.FEATURES,
        _PARAMS["dinoseg"],
        default_max_side=1024,
        summary="one object where one head's CLS attention concentrates (Caron et al., 2021)",
        inputs=frozenset({"attention"}),
        paper_input=InputSetting(),  # full resolution, zero-padded (LOST's DINO-seg baseline)
    ),
    "dss": MethodInfo(
        "dss",
        MethodKind.FEATURES,
        _PARAMS["dss"],
        default_max_side=1024,
        summary="one object from the Fiedler vector of the key affinity (Melas-Kyriazi, 2022)",
        paper_input=InputSetting(crop=True),  # full resolution, cut to whole patches
    ),
    "promerge": MethodInfo(
        "promerge",
        MethodKind.FEATURES,
        _PARAMS["promerge"],
        default_max_side=480,  # the authors' 480 px input, aspect preserved
        summary="several objects from seed prompts, filtered and merged (Li & Shin, 2024)",
        refine_default=True,  # the authors refine every merged mask with MaskCut's CRF
        paper_input=InputSetting(square=480),  # 480 x 480, resized with LANCZOS
    ),
}
"""Every method a spec may name, by name. By default LOST and TokenCut run at capped full
resolution, their papers' setting below the cap; the detector sees the full image unless the
spec caps it. Preset ``paper`` gives each method its authors' input (``paper_input``)."""

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
FEATURE_METHODS: tuple[str, ...] = tuple(
    name for name, info in METHODS.items() if info.kind is MethodKind.FEATURES
)


_PROMPT_PARAMS: dict[str, tuple[Param, ...]] = {
    "points": (Param("tau", "float", 0.2, minimum=-1.0, maximum=1.0),),
    "box": _PARAMS["tokencut"],  # the rectangle's graph is TokenCut's
    "prompt": _PARAMS["tokencut"],
}

PROMPT_METHODS: dict[str, MethodInfo] = {
    name: MethodInfo(
        name,
        MethodKind.PROMPT,
        _PROMPT_PARAMS[name],
        default_max_side=480,  # the interactive input when the project's spec sets none
        summary=summary,
        refine_default=True,  # refined at click time by the guided filter (zerolabel.refine)
    )
    for name, summary in (
        ("points", "the object under positive clicks, less what negative clicks carve out"),
        ("box", "the main object inside a rectangle, TokenCut's cut of its patches"),
        ("prompt", "the object of clicks and a rectangle together"),
    )
}
"""The prompt methods (:mod:`zerolabel.discovery.prompts`): one object from an annotator's
clicks or rectangle, for interactive pre-annotation. Apart from :data:`METHODS`: a spec never
names them and they are no choice of a project's ``method``."""


def get_prompt(name: str) -> MethodInfo:
    """The registered prompt method called ``name``.

    Raises:
        ConfigError: no such prompt method (the message lists the registered ones).
    """
    try:
        return PROMPT_METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown prompt method {name!r}: use one of {', '.join(PROMPT_METHODS)}"
        ) from None


def get(name: str) -> MethodInfo:
    """The registered method called ``name``.

    Raises:
        ConfigError: no such method (the message lists the registered ones).
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown method {name!r}: use one of {', '.join(METHOD_NAMES)}"
        ) from None


def param_names() -> frozenset[str]:
    """Every parameter name of every method."""
    return frozenset(p.name for info in METHODS.values() for p in info.params)


F = TypeVar("F", bound=Callable[..., Any])


def checked(name: str) -> Callable[[F], F]:
    """Decorate a feature or prompt method's function: its registered parameters are checked
    against :data:`METHODS` or :data:`PROMPT_METHODS` (type and range) before it runs, so their
    rules are written once, here.

    Example: ``@checked("lost")`` above ``def lost(keys, grid_hw, *, k_patches=100)``; a call
    with ``k_patches=0`` raises the registry's :class:`~zerolabel.errors.ConfigError` (a
    ``ValueError``) naming the parameter and its range.
    """
    info = PROMPT_METHODS[name] if name in PROMPT_METHODS else get(name)
    registered = {param.name for param in info.params}

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            given = {key: value for key, value in kwargs.items() if key in registered}
            return function(*args, **{**kwargs, **info.check_params(given)})

        return cast(F, call)

    return decorate
