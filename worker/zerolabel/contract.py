"""Wire types shared by the backend, the workers and the CLI (standard library only).

Everything that crosses Redis or lands in a file is one of these dataclasses turned into plain
JSON-ready dicts with ``to_dict`` / ``from_dict``. Coordinates are original-image pixels,
x to the right and y down, with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from zerolabel import methods
from zerolabel.errors import ConfigError
from zerolabel.methods import FEATURE_METHODS as FEATURE_METHODS  # re-exported: older imports
from zerolabel.methods import METHOD_NAMES as METHOD_NAMES

SCHEMA_VERSION = 1
SHAPE_FORMS = ("box", "mask", "both")
"""Values of :attr:`DiscoverySpec.shapes`: the forms the ``shapes`` option resolves to."""
PIPELINE_VERSION = 4  # bump when a change alters the regions produced for the same spec
# 2: MaskCut's square input resized with LANCZOS; masks refined to pixels (zerolabel.refine);
#    region scores from zerolabel.quality
# 3: cad region scores rescaled from [score_threshold, 1] to [0, 1]; the task score is the
#    mean region score
# 4: DSS takes its largest component 8-connected; ProMerge keeps merged groups whose mean key
#    leans towards the background, scored by their proposals


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in original-image pixels; ``x1`` and ``y1`` are exclusive."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def to_list(self) -> list[float]:
        return [self.x0, self.y0, self.x1, self.y1]

    @classmethod
    def from_list(cls, xyxy: list[float]) -> Box:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        return cls(x0, y0, x1, y1)


@dataclass(frozen=True)
class Rle:
    """Uncompressed COCO run-length encoding of a binary mask.

    ``counts`` alternates runs of 0 and 1 over the mask flattened in column-major order,
    starting with a (possibly empty) run of 0. It feeds both the COCO export and Label Studio's
    brush format.
    """

    size_hw: tuple[int, int]
    counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size_hw), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rle:
        h, w = data["size"]
        return cls((int(h), int(w)), [int(c) for c in data["counts"]])


@dataclass(frozen=True)
class Region:
    """One discovered object."""

    box: Box
    score: float  # trust in [0, 1]: zerolabel.quality, or the detector's confidence
    method: str  # key of zerolabel.methods.METHODS
    mask: Rle | None = None
    label: str | None = None  # pseudo-class name once clustered

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.to_list(),
            "score": self.score,
            "method": self.method,
            "mask": self.mask.to_dict() if self.mask else None,
            "label": self.label,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        mask = data.get("mask")
        return cls(
            box=Box.from_list(data["box"]),
            score=float(data["score"]),
            method=str(data["method"]),
            mask=Rle.from_dict(mask) if mask else None,
            label=data.get("label"),
        )


@dataclass(frozen=True)
class DiscoveryResult:
    """All regions found in one image, or the reason there are none."""

    source: str  # path or URL the image came from
    image_hw: tuple[int, int]  # original size, after EXIF orientation
    regions: list[Region] = field(default_factory=list)
    model_version: str = ""
    task_id: int | None = None
    error: str | None = None  # set when the image could not be processed

    @property
    def score(self) -> float:
        """Task-level score in [0, 1]: :meth:`task_score` of the region scores."""
        return self.task_score([r.score for r in self.regions])

    @staticmethod
    def task_score(region_scores: Sequence[float]) -> float:
        """The mean of a task's region scores, clipped to [0, 1]; 0 without regions.

        Label Studio's queue sorted by it (ascending) shows first the tasks most likely to
        need a correction. Were region scores the probability that a region is a right
        object, the mean would be the expected share of the task's pre-labels that need no
        edit. Every region shown is one the annotator must check, so many weak regions pull
        the task down (a detector's tail of weak detections included), while one weak region
        among good ones costs less than a task of weak regions only. The lowest region score
        would give nearly every detector task the detection threshold, and would not tell one
        doubtful region among ten good ones from ten doubtful ones; for one-region methods the
        two are the same. An image where nothing was found (an object missed, or none there)
        scores 0, before all others.

        Raises:
            ValueError: a region score that is NaN or infinite.
        """
        bad = [s for s in region_scores if not math.isfinite(s)]
        if bad:
            raise ValueError(f"region scores must be finite numbers in [0, 1], got {bad[0]}")
        if not region_scores:
            return 0.0
        return min(max(math.fsum(region_scores) / len(region_scores), 0.0), 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "source": self.source,
            "image_hw": list(self.image_hw),
            "regions": [r.to_dict() for r in self.regions],
            "model_version": self.model_version,
            "task_id": self.task_id,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoveryResult:
        _check_schema(data, "result")
        h, w = data["image_hw"]
        return cls(
            source=str(data["source"]),
            image_hw=(int(h), int(w)),
            regions=[Region.from_dict(r) for r in data["regions"]],
            model_version=str(data["model_version"]),
            task_id=data.get("task_id"),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class DiscoverySpec:
    """What to run on an image. Its digest is the Label Studio ``model_version``.

    The backend and the workers build it from the same settings, so both name a result the
    same way without the backend ever loading the model. Building one checks the method and
    its parameters against :mod:`zerolabel.methods`, so a spec that exists can be run.

    Raises:
        ConfigError: an unknown method, an unknown or ill-typed parameter (the message names
            the method's parameters with their types), a negative ``max_side``, ``refine``
            asked of a method whose masks are pixel masks already, unknown ``shapes``, or an
            unknown ``preset`` (or ``paper`` for a method without one).

    ``preset`` ``"paper"`` gives the method its authors' input (:mod:`zerolabel.methods`,
    ``paper_input``): unless ``max_side`` or ``square`` is given, the spec is built with the
    authors' size written into them (``max_side`` 0 for full resolution, or their ``square``),
    so equal inputs are equal specs; their crop to whole patches (DSS) applies either way.
    """

    method: str = "lost"
    backbone: str = "dino_vits16"
    weights: str = "hub"  # identifies the weights: a tag, a checkpoint file name, or "hub"
    params: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the method
    max_side: int | None = None  # None: the method's default cap; 0: full resolution
    square: int | None = None  # resize to square x square, ignoring aspect (MaskCut authors)
    masks: bool = True  # attach pixel masks (RLE) to regions
    pos_embed: str = "dino"  # positional-embedding interpolation rule
    fitted: str | None = None  # file name of a fitted file the method uses (zerolabel.fitted)
    refine: bool | None = None  # dense-CRF pixel masks; None: the method's default
    # How Label Studio gets an object (zerolabel.labelstudio.tasks): "box", "mask" (one region
    # each) or "both" (a box and a brush). The workers ignore it; it names what is written.
    shapes: str = "both"
    # Which input setting sizes the images (methods.PRESETS): "default", or "paper", the
    # method's authors' (their size unless max_side / square is given, their crop or padding).
    preset: str = "default"

    def __post_init__(self) -> None:
        info = methods.get(self.method)
        info.check_fitted(self.fitted)
        if self.refine is not None and not isinstance(self.refine, bool):
            raise ConfigError(f"refine must be true, false or None, got {self.refine!r}")
        info.refines(self.refine)
        if self.shapes not in SHAPE_FORMS:
            forms = ", ".join(SHAPE_FORMS)
            raise ConfigError(f"shapes must be one of {forms}, got {self.shapes!r}")
        # Typed values (an int given for a float parameter is stored as a float), so equal
        # settings always give the same model_version.
        object.__setattr__(self, "params", info.check_params(self.params))
        if self.max_side is not None and (
            isinstance(self.max_side, bool) or not isinstance(self.max_side, int)
        ):
            raise ConfigError(f"max_side must be an integer or None, got {self.max_side!r}")
        if self.max_side is not None and self.max_side < 0:
            raise ConfigError(
                f"max_side must be >= 0 (0 means full resolution), got {self.max_side}"
            )
        if not isinstance(self.preset, str) or self.preset not in methods.PRESETS:
            presets = ", ".join(methods.PRESETS)
            raise ConfigError(f"preset must be one of {presets}, got {self.preset!r}")
        sized = info.preset_input(self.preset)
        if self.preset != "default" and self.max_side is None and not self.square:
            object.__setattr__(self, "square", sized.square)
            object.__setattr__(self, "max_side", None if sized.square else sized.max_side or 0)

    def effective_max_side(self) -> int | None:
        """The longer-side cap images get: ``max_side``, else the method's default.

        None means full resolution: ``max_side=0``, a method without a default cap, or a
        ``square`` input, which is resized from the full decode (a reduced JPEG decode would
        not be the input MaskCut's authors resize, and can be smaller than the square).
        """
        if self.square:
            return None
        if self.max_side is None:
            return methods.get(self.method).default_max_side
        return self.max_side or None

    def effective_crop(self) -> bool:
        """Whether the input is cut to whole patches on the bottom and right instead of padded:
        the preset's rule for the method (``paper`` of DSS)."""
        return methods.get(self.method).preset_input(self.preset).crop

    def effective_refine(self) -> bool:
        """Whether masks are refined to pixels: ``refine``, else the method's default."""
        return methods.get(self.method).refines(self.refine)

    def model_version(self) -> str:
        """Stable across processes and machines for the same spec."""
        identity = {"pipeline": PIPELINE_VERSION, **asdict(self)}
        identity["refine"] = self.effective_refine()  # unset and the default are one spec
        if identity["fitted"] is None:
            del identity["fitted"]  # specs without a fitted file keep their earlier versions
        if not self.masks or self.shapes == "both":
            # Without masks every form writes the same boxes; "both" is the form versions were
            # first made for: those specs keep their versions.
            del identity["shapes"]
        if self.preset == "default":
            del identity["preset"]  # specs from before presets keep their versions
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        return f"zerolabel-{self.method}-{self.backbone.split('.')[0]}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values; ``preset`` only when it is not the default, so
        workers of the version before presets still read default specs."""
        data = asdict(self)
        if self.preset == "default":
            del data["preset"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoverySpec:
        return cls(**data)


@dataclass(frozen=True)
class DiscoveryRequest:
    """One image to discover objects in: what crosses Redis from the backend to a worker.

    It holds no credentials: workers download with the Label Studio token of their own
    configuration (``LABEL_STUDIO_API_KEY``), sent only to the Label Studio they are configured
    for. ``ls_url`` only names which configured Label Studio a relative image URL belongs to;
    a worker refuses one it is not configured for.
    """

    spec: DiscoverySpec
    image: str  # task image URL (Label Studio relative or absolute) or a local path
    task_id: int | None = None
    ls_url: str | None = None  # Label Studio base URL, for relative image URLs

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "spec": self.spec.to_dict(),
            "image": self.image,
            "task_id": self.task_id,
            "ls_url": self.ls_url,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscoveryRequest:
        """The request; any token an older backend sent along is not read."""
        _check_schema(data, "request")
        return cls(
            spec=DiscoverySpec.from_dict(data["spec"]),
            image=str(data["image"]),
            task_id=data.get("task_id"),
            ls_url=data.get("ls_url"),
        )

    @property
    def absolute_image(self) -> str:
        """The image URL with its origin: a relative Label Studio URL joined to ``ls_url``."""
        if self.ls_url and self.image.startswith("/"):
            return self.ls_url.strip().rstrip("/") + self.image
        return self.image

    @property
    def job_id(self) -> str:
        """Same absolute image URL and spec -> same RQ job (``[A-Za-z0-9_-]`` only).

        The URL includes its origin, so the same relative path on two Label Studio hosts is
        two jobs, and a result fetched from one is never handed to requests for the other.
        """
        key = f"{self.spec.model_version()}|{self.absolute_image}"
        return "zl-" + hashlib.sha256(key.encode()).hexdigest()[:32]


MAX_CLICKS = 32
"""Clicks one prompt may hold (an annotator's clicks on one object)."""


@dataclass(frozen=True)
class Click:
    """A point an annotator placed: ``x``, ``y`` in fractions of the original image's width and
    height ([0, 1], x to the right, y down); ``positive`` False for a background click."""

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class Prompt:
    """What an annotator asked for on one image: clicks on an object, and/or a rectangle
    (``box`` in fractions of the original image: x0, y0, x1, y1 with x0 < x1 and y0 < y1).

    Raises:
        ValueError: no click and no box, too many clicks, a coordinate outside [0, 1] or not a
            number, an empty box.
    """

    clicks: tuple[Click, ...] = ()
    box: Box | None = None

    def __post_init__(self) -> None:
        if not self.clicks and self.box is None:
            raise ValueError("a prompt needs a click or a rectangle")
        if len(self.clicks) > MAX_CLICKS:
            raise ValueError(f"{len(self.clicks)} clicks on one object; at most {MAX_CLICKS}")
        for click in self.clicks:
            _fraction(click.x, "click x")
            _fraction(click.y, "click y")
            if not isinstance(click.positive, bool):
                raise ValueError(f"a click's positive flag must be true or false: {click!r}")
        if self.box is not None:
            for value, name in zip(self.box.to_list(), ("x0", "y0", "x1", "y1"), strict=True):
                _fraction(value, f"rectangle {name}")
            if self.box.width <= 0 or self.box.height <= 0:
                raise ValueError(f"the rectangle is empty: {self.box.to_list()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "clicks": [[c.x, c.y, c.positive] for c in self.clicks],
            "box": self.box.to_list() if self.box is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prompt:
        try:
            clicks = tuple(Click(float(x), float(y), positive) for x, y, positive in data["clicks"])
            box = Box.from_list(data["box"]) if data.get("box") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            shape = "{'clicks': [[x, y, positive], ...], 'box': [x0, y0, x1, y1] or null}"
            raise ValueError(f"a prompt must be {shape}: {exc}") from None
        return cls(clicks, box)


def _fraction(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} {value:g} lies outside the image")


@dataclass(frozen=True)
class PromptRequest:
    """One interactive prompt: the image and spec of a discovery request, and what the
    annotator clicked. Each prompt is its own job (never shared or cached as a job)."""

    request: DiscoveryRequest
    prompt: Prompt
    job_id: str = field(default_factory=lambda: "zp-" + uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "request": self.request.to_dict(),
            "prompt": self.prompt.to_dict(),
            "job_id": self.job_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptRequest:
        _check_schema(data, "prompt request")
        return cls(
            DiscoveryRequest.from_dict(data["request"]),
            Prompt.from_dict(data["prompt"]),
            str(data["job_id"]),
        )


def _check_schema(data: dict[str, Any], what: str) -> None:
    """A wire dict of another schema: backend and workers run different zerolabel versions."""
    if data.get("schema") != SCHEMA_VERSION:
        raise ValueError(
            f"{what} schema {data.get('schema')!r} is not {SCHEMA_VERSION}: "
            "backend and workers run different zerolabel versions"
        )
