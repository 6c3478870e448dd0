"""One descriptor per discovered object: the ViT's CLS output on the object's crop.

LOST's class-aware step crops each box out of the image, resizes the crop so its shorter side
is 256 pixels (bicubic) and keeps the final CLS token. :class:`DescriptorCache` stores the
results on disk, so choosing another k or re-clustering never runs the ViT again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zerolabel.contract import Box
from zerolabel.geometry import Frame
from zerolabel.io.images import LoadedImage
from zerolabel.vit.backbone import Backbone
from zerolabel.vit.features import extract
from zerolabel.vit.preprocess import to_input

logger = logging.getLogger(__name__)

SHORT_SIDE = 256
"""Shorter side of a crop fed to the ViT (LOST's class-aware step)."""

MAX_SIDE = 2048
"""Longer side cap: a crop thinner than 1:8 gets a short side below ``SHORT_SIDE`` instead of
a token count that would exhaust memory."""

CACHE_VERSION = 1
"""Part of every cache key; bump when a change alters the descriptors computed for a box."""

FloatArray32 = npt.NDArray[np.float32]


def crop_descriptor(
    backbone: Backbone,
    image: LoadedImage,
    boxes: Sequence[Box],
    *,
    short_side: int = SHORT_SIDE,
    max_side: int | None = MAX_SIDE,
) -> FloatArray32:
    """CLS output of the ViT on each box's crop.

    Each crop is resized (bicubic) so its shorter side is ``short_side``, normalised with the
    backbone's mean and std and zero-padded bottom/right to a multiple of the patch size.

    Args:
        backbone: the loaded model.
        image: the image the boxes were found in; ``pixels`` may be a reduced decode.
        boxes: boxes in original-image pixels (``image.original_hw``).
        short_side: shorter side of the resized crop, in pixels.
        max_side: longer side cap (wins over ``short_side`` for very elongated boxes); None
            for no cap.

    Returns:
        [len(boxes), E] float32, row i for box i.

    Raises:
        ValueError: a box narrower or shorter than one pixel once mapped to ``image.pixels``,
            or lying outside the image.
    """
    if short_side < 1 or (max_side is not None and max_side < 1):
        raise ValueError(f"short_side {short_side} and max_side {max_side} must be positive")
    crops = [image.pixels[_pixel_slices(box, image)] for box in boxes]  # all checked first
    rows = np.zeros((len(boxes), backbone.num_features), dtype=np.float32)
    mean, std = backbone.mean_std
    for i, crop in enumerate(crops):
        crop_hw = (int(crop.shape[0]), int(crop.shape[1]))
        frame = Frame(crop_hw, resized_hw(crop_hw, short_side, max_side), backbone.patch_size)
        batch = to_input(crop, frame, mean, std)[None]  # [1, 3, Hp, Wp]
        rows[i] = extract(backbone, batch)[0].cls_output.cpu().numpy()
    return rows


def resized_hw(
    crop_hw: tuple[int, int], short_side: int = SHORT_SIDE, max_side: int | None = MAX_SIDE
) -> tuple[int, int]:
    """Size of a crop after scaling its shorter side to ``short_side`` (longer side capped).

    Args:
        crop_hw: crop (height, width) in pixels, both >= 1.
        short_side: target shorter side.
        max_side: cap on the longer side; None for no cap.
    """
    h, w = crop_hw
    scale = short_side / min(h, w)
    if max_side is not None:
        scale = min(scale, max_side / max(h, w))
    return (max(1, round(h * scale)), max(1, round(w * scale)))


def _pixel_slices(box: Box, image: LoadedImage) -> tuple[slice, slice]:
    """Rows and columns of ``image.pixels`` covered by ``box`` (original-image pixels)."""
    ph, pw = image.pixels.shape[:2]
    sy, sx = ph / image.original_hw[0], pw / image.original_hw[1]
    if box.width * sx < 1 or box.height * sy < 1:
        raise ValueError(
            f"box {box.to_list()} is under one pixel wide or high in the {pw}x{ph} decoded "
            f"image (original {image.original_hw[1]}x{image.original_hw[0]}): no crop to describe"
        )
    x0, x1 = (min(max(_nearest(v * sx), 0), pw) for v in (box.x0, box.x1))
    y0, y1 = (min(max(_nearest(v * sy), 0), ph) for v in (box.y0, box.y1))
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise ValueError(
            f"box {box.to_list()} lies outside the {image.original_hw[1]}x"
            f"{image.original_hw[0]} image {image.source}"
        )
    return slice(y0, y1), slice(x0, x1)


def _nearest(value: float) -> int:
    """Round half up (Python's round() goes to even, which shifts alternate edges)."""
    return math.floor(value + 0.5)


class DescriptorCache:
    """Descriptors on disk, one ``.npy`` per (image, box, model, crop settings).

    Usage: ``DescriptorCache(folder).get_or_compute(backbone, image, regions_boxes)``. Keys
    hold the image's sha256 and decoded size, the box rounded to whole pixels, the backbone's
    name, weights, dtype and positional-embedding rule, and ``short_side`` / ``max_side``.
    Boxes are rounded before computing too, so a hit and a miss give the same values. Files are
    written atomically, so concurrent workers can share a folder; an unreadable file counts
    as a miss.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def get_or_compute(
        self,
        backbone: Backbone,
        image: LoadedImage,
        boxes: Sequence[Box],
        *,
        short_side: int = SHORT_SIDE,
        max_side: int | None = MAX_SIDE,
    ) -> FloatArray32:
        """Cached descriptors of ``boxes``, computing (and storing) only the missing ones.

        Returns:
            [len(boxes), E] float32, as :func:`crop_descriptor` on the rounded boxes.
        """
        rounded = [Box(*(float(_nearest(v)) for v in box.to_list())) for box in boxes]
        dim = backbone.num_features
        paths = [self.path(backbone, image, box, short_side, max_side) for box in rounded]
        rows = np.zeros((len(boxes), dim), dtype=np.float32)
        missing = []
        for i, path in enumerate(paths):
            cached = _load(path, dim)
            if cached is None:
                missing.append(i)
            else:
                rows[i] = cached
        if missing:
            picked = [rounded[i] for i in missing]
            computed = crop_descriptor(
                backbone, image, picked, short_side=short_side, max_side=max_side
            )
            for i, row in zip(missing, computed, strict=True):
                rows[i] = row
                _save(paths[i], row)
        return rows

    def path(
        self,
        backbone: Backbone,
        image: LoadedImage,
        box: Box,
        short_side: int = SHORT_SIDE,
        max_side: int | None = MAX_SIDE,
    ) -> Path:
        """File of one descriptor: ``folder/<image sha256>/<key digest>.npy``."""
        key = {
            "version": CACHE_VERSION,
            "pixels_hw": list(image.pixels.shape[:2]),
            "box": [_nearest(v) for v in box.to_list()],
            "backbone": backbone.name,
            "weights": backbone.weights_id,
            "dtype": str(backbone.dtype),
            "pos_embed": backbone.pos_embed,
            "short_side": short_side,
            "max_side": max_side,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.folder / image.sha256 / f"{digest}.npy"


def _load(path: Path, dim: int) -> FloatArray32 | None:
    """A stored [dim] descriptor, or None when absent or unreadable."""
    try:
        row = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable cached descriptor %s: %s", path, exc)
        return None
    if row.shape != (dim,) or not np.isfinite(row).all():
        logger.warning("ignoring cached descriptor %s of shape %s", path, row.shape)
        return None
    return np.asarray(row, dtype=np.float32)


def _save(path: Path, row: FloatArray32) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, row, allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
