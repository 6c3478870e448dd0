"""Patch grid -> pixels -> boxes and run-length encodings (numpy only).

The discovery methods work on the ViT patch grid. The network sees the image resized to
``content_hw`` and zero-padded on the bottom/right to a multiple of the patch size; patch
``(row, col)`` covers content pixels ``[row * p, (row + 1) * p)`` x ``[col * p, (col + 1) * p)``.
This module is the only place that maps those cells back to the original image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zerolabel.contract import Box, Rle

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Frame:
    """How one image was fed to the network."""

    original_hw: tuple[int, int]  # the image as loaded (after EXIF orientation)
    content_hw: tuple[int, int]  # the resized image inside the padded network input
    patch_size: int

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid of the padded input (ceil of content / patch)."""
        p = self.patch_size
        return (-(-self.content_hw[0] // p), -(-self.content_hw[1] // p))

    @property
    def padded_hw(self) -> tuple[int, int]:
        gh, gw = self.grid_hw
        return (gh * self.patch_size, gw * self.patch_size)

    @property
    def scale_yx(self) -> tuple[float, float]:
        """Original pixels per content pixel, along y and x."""
        return (
            self.original_hw[0] / self.content_hw[0],
            self.original_hw[1] / self.content_hw[1],
        )


def patch_mask_to_box(mask: BoolArray, frame: Frame) -> Box | None:
    """Bounding box of the True cells of a patch mask, in whole original pixels.

    ``[x_min, y_min, x_max + 1, y_max + 1] * patch_size`` clipped to the original size (max
    exclusive): exactly the LOST/TokenCut rule when the image was not resized. After a resize
    each edge is scaled and rounded the way :func:`patch_mask_to_pixel_mask` samples pixels
    (half down), so the box is the tight box of the region's pixel mask.

    Args:
        mask: [gh, gw] bool patch mask.
        frame: the geometry of the network input.

    Returns:
        The box, or None for an empty mask.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    p = frame.patch_size
    sy, sx = frame.scale_yx
    h, w = frame.original_hw

    def edge(cells: int, scale: float, limit: int) -> float:
        return float(min(math.ceil(cells * p * scale - 0.5), limit))

    return Box(
        x0=edge(int(cols[0]), sx, w),
        y0=edge(int(rows[0]), sy, h),
        x1=edge(int(cols[-1]) + 1, sx, w),
        y1=edge(int(rows[-1]) + 1, sy, h),
    )


def patch_mask_to_pixel_mask(mask: BoolArray, frame: Frame) -> BoolArray:
    """Nearest-neighbour upsampling of a patch mask to the original image.

    Each original pixel looks up the content pixel under its centre, then that pixel's patch.

    Args:
        mask: [gh, gw] bool patch mask.
        frame: the geometry of the network input.

    Returns:
        [H, W] bool mask at the original size.
    """
    (h, w), (ch, cw), p = frame.original_hw, frame.content_hw, frame.patch_size
    rows = ((np.arange(h) + 0.5) * ch / h).astype(np.int64) // p
    cols = ((np.arange(w) + 0.5) * cw / w).astype(np.int64) // p
    return np.asarray(mask, dtype=bool)[rows[:, None], cols[None, :]]


def mask_to_box(mask: BoolArray) -> Box | None:
    """Tight box around the True pixels of a pixel mask (max exclusive); None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (continuous coordinates, no +1)."""
    iw = min(a.x1, b.x1) - max(a.x0, b.x0)
    ih = min(a.y1, b.y1) - max(a.y0, b.y0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def mask_iou(a: BoolArray, b: BoolArray) -> float:
    """Intersection over union of two same-shape masks (0 when both are empty)."""
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union else 0.0


def rle_encode(mask: BoolArray) -> Rle:
    """Uncompressed COCO RLE of an [H, W] mask (column-major, first run counts zeros)."""
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return Rle((int(h), int(w)), [int(c) for c in counts])


def rle_decode(rle: Rle) -> BoolArray:
    """Inverse of :func:`rle_encode`: [H, W] bool mask."""
    h, w = rle.size_hw
    values = np.zeros(len(rle.counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, rle.counts)
    if flat.size != h * w:
        raise ValueError(f"RLE counts sum to {flat.size}, expected {h}x{w}={h * w}")
    return flat.reshape((h, w), order="F")


def rle_area(rle: Rle) -> int:
    """Number of foreground pixels."""
    return int(sum(rle.counts[1::2]))


def rle_to_coco_string(rle: Rle) -> str:
    """COCO's compressed ``counts`` string (what pycocotools' ``encode`` writes).

    Each count is stored as the difference to the count two places back (from the third on),
    written in 5-bit groups, least significant first, offset by 48 into printable ASCII; bit
    0x20 marks that more groups follow.
    """
    out: list[str] = []
    counts = rle.counts
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: negative deltas end at -1
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)
