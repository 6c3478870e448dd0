"""What fitting a method on a dataset shares: the images, their features, annotated targets.

A :class:`FitSample` names an image and how to load it (a local file, a Label Studio task) and,
when the fit learns from corrected labels, the objects annotated on it. :func:`sample_features`
runs the ViT on each sample exactly as the pipeline does for prediction (same resize, padding
and positional rule), one image at a time, and skips (and reports) images that cannot be read.
:func:`object_targets` turns annotated boxes and masks into one target per patch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from zerolabel import geometry, methods
from zerolabel.errors import ImageLoadError
from zerolabel.formats.dataset import ObjectRecord
from zerolabel.io.images import LoadedImage
from zerolabel.progress import track
from zerolabel.vit import features, preprocess
from zerolabel.vit.backbone import Backbone

logger = logging.getLogger(__name__)

COVERED = 0.5
"""A patch is a target when at least this fraction of its pixels lies inside an object."""


@dataclass(frozen=True)
class FitSample:
    """One image of a fit: its name, a loader and (for corrected labels) its objects."""

    name: str
    load: Callable[[], LoadedImage]  # raises ImageLoadError when the image cannot be read
    objects: Sequence[ObjectRecord] | None = None  # annotated objects, original pixels
    annotated_hw: tuple[int, int] | None = None  # (height, width) the objects refer to


@dataclass
class FitReport:
    """Which images a fit used and which it skipped (name, reason)."""

    images: int = 0
    patches: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.images} image(s), {self.patches} patches, {len(self.skipped)} skipped"]
        lines += [f"  SKIPPED {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


@dataclass(frozen=True)
class SampleFeatures:
    """The last-block features of one sample and the geometry of its network input."""

    sample: FitSample
    feats: features.PatchFeatures
    frame: geometry.Frame


def sample_features(
    backbone: Backbone,
    samples: Iterable[FitSample],
    max_side: int | None,
    report: FitReport,
    *,
    square: int | None = None,
    what: str = "computing features",
) -> Iterator[SampleFeatures]:
    """Features of each readable sample, one forward pass each; unreadable ones are logged and
    added to ``report.skipped``, the others counted in ``report``.

    Args:
        backbone: the loaded ViT.
        samples: the images.
        max_side: the longer-side cap the method's spec gives (None: full size).
        report: updated as samples are read.
        square: resize to ``square x square`` instead, ignoring the aspect (as a spec's
            ``square`` does).
        what: the progress line's text.
    """
    mean, std = backbone.mean_std
    for sample in track(samples, what, unit="image"):
        try:
            image = sample.load()
        except ImageLoadError as exc:
            logger.warning("skipped %s: %s", sample.name, exc.reason)
            report.skipped.append((sample.name, exc.reason))
            continue
        frame = frame_of(image, backbone.patch_size, max_side, square)
        batch = preprocess.to_input(image.pixels, frame, mean, std, square=bool(square))[None]
        (feats,) = features.extract(backbone, batch)
        report.images += 1
        report.patches += feats.k.shape[0]
        yield SampleFeatures(sample, feats, frame)


def effective_max_side(method: str, max_side: int | None) -> int | None:
    """The longer-side cap a spec of ``method`` with ``max_side`` gives its images (as
    ``DiscoverySpec.effective_max_side``): None takes the method's default, 0 full size."""
    if max_side is None:
        return methods.get(method).default_max_side
    return max_side or None


def frame_of(
    image: LoadedImage, patch_size: int, max_side: int | None, square: int | None = None
) -> geometry.Frame:
    """The geometry the pipeline gives ``image`` (capped with aspect kept, or ``square``)."""
    content = preprocess.content_size(image.original_hw, max_side, square)
    return geometry.Frame(image.original_hw, content, patch_size)


def object_targets(
    objects: Sequence[ObjectRecord], annotated_hw: tuple[int, int], frame: geometry.Frame
) -> torch.Tensor:
    """[gh, gw] bool: the patches at least :data:`COVERED` inside an annotated object.

    Each object is its mask when it has one, else its box. The union is sampled at the centre
    of every network-input pixel (the annotation's size may differ from the decoded image's:
    positions are mapped by fraction of the image), so padded pixels are never targets.

    Args:
        objects: the annotated objects, in pixels of an ``annotated_hw`` image.
        annotated_hw: (height, width) of the annotated image.
        frame: the geometry of the network input.
    """
    union = np.zeros(annotated_hw, dtype=bool)
    for record in objects:
        if record.mask is not None and tuple(record.mask.size_hw) == tuple(annotated_hw):
            union |= geometry.rle_decode(record.mask)
        else:
            box = record.box
            union[int(box.y0) : int(np.ceil(box.y1)), int(box.x0) : int(np.ceil(box.x1))] = True
    return torch.from_numpy(_patch_coverage(union, frame) >= COVERED)


def _patch_coverage(mask: npt.NDArray[np.bool_], frame: geometry.Frame) -> npt.NDArray[np.float64]:
    """Fraction of each patch's network-input pixels that fall inside ``mask``."""
    (h, w), (ch, cw), p = mask.shape, frame.content_hw, frame.patch_size
    rows = ((np.arange(ch) + 0.5) * h / ch).astype(np.int64)
    cols = ((np.arange(cw) + 0.5) * w / cw).astype(np.int64)
    padded = np.zeros(frame.padded_hw, dtype=np.float64)
    padded[:ch, :cw] = mask[rows[:, None], cols[None, :]]
    gh, gw = frame.grid_hw
    coverage: npt.NDArray[np.float64] = padded.reshape(gh, p, gw, p).mean(axis=(1, 3))
    return coverage
