"""``zerolabel rps-fit``: the foreground direction(s) of representer point selection.

One pass over the images: each image adds the mean of its representer features (the last
block's output tokens through a ReLU, :func:`zerolabel.discovery.rps.features`) and the mean of
their L2-normalised copies to two running sums (float64), so each image weighs the same, as in
the authors' fit; no feature is kept. The direction is
:func:`zerolabel.discovery.rps.foreground_direction` of the sums over the image count.

With a project's annotations (the boxes annotators accepted) three more things are learned:

- class-wise directions (the authors' class-specific parameters): when at least two labels
  each hold :data:`MIN_CLASS_IMAGES` annotated images, one direction per label from the images
  holding it; a prediction is the region of the direction that scores best, labelled with it.
- the threshold: a second pass over the annotated images boxes each at every threshold the
  authors sweep (:data:`zerolabel.discovery.rps.THRESHOLDS`) and keeps the one whose boxes
  match the accepted ones best, by the authors' measure (the mean over IoU 0.3, 0.5 and 0.7 of
  the share of images whose box reaches it with an accepted box).
- nothing else: a negative task (annotated as empty) adds its features to the directions only.

The top representer patches of each direction (the training patches with the largest
representer values, :class:`Representer`) come with the report, for
:func:`zerolabel.loop.sheets.write_patch_sheets`.

Preset ``paper`` fits as the authors do: images resized to 224 x 224 and the box rule on the
map upsampled to the input's pixels (``cells_per_patch`` = the patch size); the default preset
keeps the longer side capped as prediction does and boxes on the patch grid.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from zerolabel import geometry, methods
from zerolabel.contract import Box
from zerolabel.discovery.rps import (
    THRESHOLDS,
    ForegroundMap,
    activation_maps,
    best_region,
    features,
    foreground_direction,
)
from zerolabel.fitted import Fitted
from zerolabel.io.images import LoadedImage
from zerolabel.loop.fitting import FitReport, FitSample, effective_max_side, sample_features
from zerolabel.vit.backbone import Backbone

logger = logging.getLogger(__name__)

KIND = "rps"
"""The fitted kind method ``rps`` reads."""

MIN_CLASS_IMAGES = 3
"""Annotated images a label needs for a direction of its own."""

REPRESENTERS = 8
"""Top representer patches kept per direction."""

IOU_BOUNDS = (0.3, 0.5, 0.7)
"""The IoUs the authors' box accuracy averages over (their MaxBoxAccV2)."""


@dataclass
class DirectionSums:
    """Running sums of per-image means of raw and L2-normalised features (float64)."""

    raw: torch.Tensor | None = None
    unit: torch.Tensor | None = None
    patches: int = 0
    images: int = 0

    def add(self, feats: torch.Tensor) -> None:
        """Add the [N, E] representer features of one image (it weighs as any other)."""
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise ValueError(f"features must be [N, E] with N >= 1, got {tuple(feats.shape)}")
        feats64 = feats.detach().to("cpu", torch.float64)
        raw, unit = feats64.mean(dim=0), F.normalize(feats64, p=2, dim=1).mean(dim=0)
        if self.raw is None or self.unit is None:
            self.raw, self.unit = raw, unit
        elif self.raw.shape != raw.shape:
            raise ValueError(f"features of width {raw.shape[0]} after {self.raw.shape[0]}")
        else:
            self.raw, self.unit = self.raw + raw, self.unit + unit
        self.patches += feats.shape[0]
        self.images += 1

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``v`` and ``u``: the means over the images of their mean features.

        Raises:
            ValueError: nothing was added.
        """
        if self.raw is None or self.unit is None or self.images == 0:
            raise ValueError("no image could be read: nothing to fit the direction on")
        return self.raw / self.images, self.unit / self.images

    def direction(self) -> torch.Tensor:
        """``w*`` of the features added so far, [E] float32.

        Raises:
            ValueError: nothing was added, or the features give no direction.
        """
        return foreground_direction(*self.means())

    def representer_value(self, norm: float, patches: int) -> float:
        """The weight of one training feature in ``w* = sum_i a_i f_i``.

        ``w* = (v - s u) / |v - s u|`` with ``s = |v| / |u|`` is, feature by feature,
        ``a_i = (1 - s / |f_i|) / (images * N_i * |v - s u|)`` for a feature of norm ``|f_i|``
        in an image of ``N_i`` patches: positive for features longer than ``s``.
        """
        v, u = self.means()
        scale = float(v.norm() / u.norm())
        length = float((v - u * scale).norm())
        if norm <= 0 or length <= 0:
            return 0.0
        return (1.0 - scale / norm) / (self.images * patches * length)


@dataclass(frozen=True)
class Representer:
    """One top representer patch: where it is, and its weight in its direction."""

    sample: FitSample  # the image it is in (loaded again for sheets)
    box: Box  # the patch in original pixels
    value: float  # its representer value

    @property
    def name(self) -> str:
        """The image's name (a file, or a task)."""
        return self.sample.name

    def load(self) -> LoadedImage:
        """The image the patch is in (loaded again)."""
        return self.sample.load()

    def to_dict(self) -> dict[str, object]:
        return {"image": self.name, "box": self.box.to_list(), "value": self.value}


@dataclass(frozen=True)
class ThresholdPick:
    """The threshold whose boxes matched the accepted ones best."""

    threshold: float
    images: int  # annotated images it was picked on
    accuracy: tuple[float, ...]  # share of images with IoU >= each of IOU_BOUNDS, at the pick

    @property
    def mean(self) -> float:
        """The authors' box accuracy: the mean over the IoU bounds."""
        return float(np.mean(self.accuracy))


@dataclass
class RpsFitReport(FitReport):
    """What an rps fit read and learned besides the direction."""

    classes: dict[str, int] = field(default_factory=dict)  # label -> images, class-wise fits
    pick: ThresholdPick | None = None
    representers: dict[str, list[Representer]] = field(default_factory=dict)  # by direction

    def summary(self) -> str:
        lines = [super().summary()]
        if self.classes:
            counts = ", ".join(f"{label} ({n} images)" for label, n in self.classes.items())
            lines.append(f"class-wise: one direction per label: {counts}")
        if self.pick:
            shares = ", ".join(
                f"IoU>={bound}: {share:.0%}"
                for bound, share in zip(IOU_BOUNDS, self.pick.accuracy, strict=True)
            )
            lines.append(
                f"threshold {self.pick.threshold:.2f} picked on {self.pick.images} annotated "
                f"image(s): box accuracy {self.pick.mean:.0%} ({shares})"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    """A training patch that may be a top representer: among the longest of its image."""

    sample: FitSample
    box: Box
    norm: float
    patches: int
    labels: frozenset[str]


@dataclass
class _Pass:
    """What the first pass gathers."""

    sums: DirectionSums = field(default_factory=DirectionSums)
    by_label: dict[str, DirectionSums] = field(default_factory=dict)
    candidates: list[_Candidate] = field(default_factory=list)
    annotated: list[FitSample] = field(default_factory=list)


def fit_rps(
    samples: Iterable[FitSample],
    backbone: Backbone,
    *,
    backbone_name: str,
    weights: str,
    max_side: int | None = None,
    preset: str = "default",
    classwise: bool = True,
    min_class_images: int = MIN_CLASS_IMAGES,
) -> tuple[Fitted, RpsFitReport]:
    """The ``rps`` fitted file of a dataset.

    Args:
        samples: the images; those with annotated objects (a project's accepted boxes) also
            give class-wise directions and the threshold.
        backbone: the loaded ViT.
        backbone_name: how settings name it (``ZEROLABEL_BACKBONE``): the file is bound to it.
        weights: how model_version names its weights (``WorkerSettings.weights``).
        max_side: longer-side cap of the images (None: the preset's size, 0: full size), as
            prediction will use.
        preset: ``default`` or ``paper`` (:data:`zerolabel.methods.PRESETS`).
        classwise: fit one direction per label when the annotations allow it.
        min_class_images: annotated images a label needs for its own direction.

    Returns:
        The fit (tensor ``direction``, [E] or [C, E]; arguments: ``labels`` of a class-wise
        fit, ``picked_threshold``, ``cells_per_patch``; meta: what it was fitted on) and what
        was read.

    Raises:
        ValueError: no image could be read, or the features give no direction.
    """
    side, square = fit_input(max_side, preset)
    cells = backbone.patch_size if preset == "paper" else 1
    report = RpsFitReport()
    gathered = _first_pass(backbone, samples, side, square, report)
    labels = _classes(gathered.by_label, min_class_images) if classwise else []
    if labels:
        direction = torch.stack([gathered.by_label[label].direction() for label in labels])
        report.classes = {label: gathered.by_label[label].images for label in labels}
    else:
        direction = gathered.sums.direction()
    arguments: dict[str, object] = {"cells_per_patch": cells}
    if labels:
        arguments["labels"] = labels
    report.pick = _pick_threshold(backbone, gathered.annotated, side, square, direction, cells)
    if report.pick is not None:
        arguments["picked_threshold"] = report.pick.threshold
    report.representers = _representers(gathered, labels)
    meta: dict[str, object] = {
        "images": gathered.sums.images,
        "patches": gathered.sums.patches,
        "max_side": side,
        "square": square,
        "preset": preset,
    }
    if report.classes:
        meta["classes"] = report.classes
    if report.pick is not None:
        meta["threshold_images"] = report.pick.images
        meta["box_accuracy"] = round(report.pick.mean, 6)
    return Fitted(KIND, backbone_name, weights, {"direction": direction}, meta, arguments), report


def fit_input(max_side: int | None, preset: str) -> tuple[int | None, int | None]:
    """The longer-side cap and the square size of a fit's images: ``max_side`` when given (0:
    full size), else the preset's (:meth:`zerolabel.methods.MethodInfo.preset_input`), as a
    spec of method rps with that preset sizes them.

    Returns:
        (cap or None for full size, square side or None); a square image is decoded whole.

    Raises:
        ConfigError: an unknown preset.
    """
    sized = methods.get(KIND).preset_input(preset)
    if max_side is not None:
        return effective_max_side(KIND, max_side), None
    if sized.square:
        return None, sized.square
    return effective_max_side(KIND, sized.max_side), None


def _first_pass(
    backbone: Backbone,
    samples: Iterable[FitSample],
    side: int | None,
    square: int | None,
    report: FitReport,
) -> _Pass:
    gathered = _Pass()
    for item in sample_features(backbone, samples, side, report, square=square):
        feats = features(item.feats.tokens)
        gathered.sums.add(feats)
        objects = item.sample.objects or []
        labels = frozenset(obj.label for obj in objects)
        for label in labels:
            gathered.by_label.setdefault(label, DirectionSums()).add(feats)
        if objects and item.sample.annotated_hw is not None:
            gathered.annotated.append(item.sample)
        gathered.candidates += _longest_patches(item.sample, feats, item.frame, labels)
    return gathered


def _longest_patches(
    sample: FitSample, feats: torch.Tensor, frame: geometry.Frame, labels: frozenset[str]
) -> list[_Candidate]:
    """The :data:`REPRESENTERS` longest features of one image: within an image a representer
    value grows with the norm, so the top representers of a dataset are among these."""
    norms = feats.norm(dim=1)
    top = torch.topk(norms, min(REPRESENTERS, norms.numel())).indices.tolist()
    width = frame.grid_hw[1]
    candidates = []
    for patch in top:
        cell = np.zeros(frame.grid_hw, dtype=bool)
        cell[divmod(patch, width)] = True
        box = geometry.patch_mask_to_box(cell, frame)
        if box is not None:
            candidates.append(_Candidate(sample, box, float(norms[patch]), feats.shape[0], labels))
    return candidates


def _classes(by_label: dict[str, DirectionSums], min_images: int) -> list[str]:
    """The labels that get a direction of their own: all with ``min_images`` images, when at
    least two do (one label alone is the whole dataset's direction, fitted on fewer images)."""
    eligible = sorted(label for label, sums in by_label.items() if sums.images >= min_images)
    left_out = sorted(set(by_label) - set(eligible))
    if len(eligible) < 2:
        if by_label:
            logger.info(
                "one direction for the dataset: class-wise fits need two labels with %d "
                "annotated images each",
                min_images,
            )
        return []
    if left_out:
        logger.warning(
            "labels with fewer than %d annotated images get no direction: %s",
            min_images,
            ", ".join(left_out),
        )
    return eligible


def _representers(gathered: _Pass, labels: Sequence[str]) -> dict[str, list[Representer]]:
    """The top representer patches of each direction: ``"all"``, or one per class."""
    groups = {label: gathered.by_label[label] for label in labels} or {"all": gathered.sums}
    shown: dict[str, list[Representer]] = {}
    for name, sums in groups.items():
        pool = [c for c in gathered.candidates if name == "all" or name in c.labels]
        valued = [(sums.representer_value(c.norm, c.patches), i) for i, c in enumerate(pool)]
        best = heapq.nlargest(REPRESENTERS, (v for v in valued if v[0] > 0))
        shown[name] = [Representer(pool[i].sample, pool[i].box, value) for value, i in best]
    return shown


def _pick_threshold(
    backbone: Backbone,
    annotated: Sequence[FitSample],
    side: int | None,
    square: int | None,
    direction: torch.Tensor,
    cells: int,
) -> ThresholdPick | None:
    """The threshold that boxes the annotated images best (second pass over them); None
    without annotated images."""
    if not annotated:
        return None
    hits = np.zeros((len(THRESHOLDS), len(IOU_BOUNDS)), dtype=np.int64)
    images = 0
    scratch = FitReport()  # the first pass reported these images already
    for item in sample_features(
        backbone, annotated, side, scratch, square=square, what="picking the threshold"
    ):
        maps = [
            ForegroundMap(cosine, item.feats.grid_hw, cells)
            for cosine in activation_maps(features(item.feats.tokens), direction)
        ]
        truth = _accepted_boxes(item.sample, item.frame.original_hw)
        hits += threshold_hits(maps, item.frame, truth)
        images += 1
    return pick_threshold(hits, images) if images else None


def _accepted_boxes(sample: FitSample, image_hw: tuple[int, int]) -> list[Box]:
    """The sample's annotated boxes in pixels of the loaded image's original size."""
    (h, w), (ah, aw) = image_hw, sample.annotated_hw or image_hw
    sy, sx = h / ah, w / aw
    return [
        Box(o.box.x0 * sx, o.box.y0 * sy, o.box.x1 * sx, o.box.y1 * sy)
        for o in sample.objects or []
    ]


def threshold_hits(
    maps: Sequence[ForegroundMap],
    frame: geometry.Frame,
    truth: Sequence[Box],
    thresholds: Sequence[float] = THRESHOLDS,
) -> npt.NDArray[np.int64]:
    """Whether the box predicted at each threshold reaches each IoU bound with an accepted box.

    Args:
        maps: the image's maps, one per direction (the method's best region is taken).
        frame: the geometry of the network input.
        truth: the accepted boxes, original pixels.
        thresholds: the thresholds to try.

    Returns:
        [len(thresholds), len(IOU_BOUNDS)] of 0 and 1.
    """
    cells = maps[0].cells_per_patch if maps else 1
    fine = geometry.Frame(frame.original_hw, frame.content_hw, frame.patch_size // cells)
    hits = np.zeros((len(thresholds), len(IOU_BOUNDS)), dtype=np.int64)
    for row, threshold in enumerate(thresholds):
        found = best_region(maps, threshold)
        box = None if found is None else geometry.patch_mask_to_box(found[0].numpy(), fine)
        if box is None or not truth:
            continue
        best = max(geometry.box_iou(box, accepted) for accepted in truth)
        hits[row] = [best >= bound for bound in IOU_BOUNDS]
    return hits


def pick_threshold(
    hits: npt.NDArray[np.int64], images: int, thresholds: Sequence[float] = THRESHOLDS
) -> ThresholdPick:
    """The threshold of highest mean box accuracy (the lowest one on ties, as the authors'
    ``argmax``).

    Args:
        hits: [len(thresholds), len(IOU_BOUNDS)] counts of images reaching each bound.
        images: how many images were counted.
        thresholds: the thresholds the rows stand for.

    Raises:
        ValueError: no image, or hits of another shape.
    """
    if images < 1 or hits.shape != (len(thresholds), len(IOU_BOUNDS)):
        raise ValueError(f"hits of shape {hits.shape} over {images} images: nothing to pick from")
    shares = hits / images
    row = int(np.argmax(shares.mean(axis=1)))
    return ThresholdPick(thresholds[row], images, tuple(float(s) for s in shares[row]))
