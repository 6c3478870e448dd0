"""Patch grid -> pixels -> boxes and run-length encodings (numpy only).

The discovery methods work on the ViT patch grid. The network sees the image resized to
``content_hw`` and zero-padded on the bottom/right to a multiple of the patch size, or, for a
cropped frame, cut there to whole patches (the remainder, less than a patch, is never seen);
patch ``(row, col)`` covers content pixels ``[row * p, (row + 1) * p)`` x
``[col * p, (col + 1) * p)``. This module is the only place that maps those cells back to the
original image.

Masks travel as :class:`~zerolabel.contract.Rle` (column-major, COCO's order). The run helpers
at the end work on "set runs": ``starts`` and ``ends`` (exclusive) of the runs of set pixels
of a flattened mask, int64 arrays, increasing and not touching. :func:`transpose_runs` turns
row-major set runs into column-major ones without building the pixel array, so a mask never
costs more than its runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zerolabel.contract import Box, Rle

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Frame:
    """How one image was fed to the network."""

    original_hw: tuple[int, int]  # the image as loaded (after EXIF orientation)
    content_hw: tuple[int, int]  # the resized image, before padding or cropping
    patch_size: int
    crop: bool = False  # cut the content to whole patches instead of padding it (DSS authors)

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Patch grid of the network input: ceil of content / patch, or its floor when the
        frame crops (at least one patch: a side shorter than a patch is padded)."""
        p = self.patch_size
        if self.crop:
            return (max(1, self.content_hw[0] // p), max(1, self.content_hw[1] // p))
        return (-(-self.content_hw[0] // p), -(-self.content_hw[1] // p))

    @property
    def padded_hw(self) -> tuple[int, int]:
        """Size of the network input: the grid in pixels (padded, or cropped)."""
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
    exclusive): exactly the LOST/TokenCut rule when the image was not resized, and DSS's on
    its cropped input, whose patches all lie inside the image. After a resize each edge is
    scaled and rounded the way :func:`patch_mask_to_pixel_mask` samples pixels (half down),
    so the box is the tight box of the region's pixel mask.

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

    Each original pixel looks up the content pixel under its centre, then that pixel's patch;
    pixels of a cropped frame's remainder, which no patch covers, are False.

    Args:
        mask: [gh, gw] bool patch mask.
        frame: the geometry of the network input.

    Returns:
        [H, W] bool mask at the original size.
    """
    (h, w), (ch, cw), p = frame.original_hw, frame.content_hw, frame.patch_size
    gh, gw = frame.grid_hw
    rows = ((np.arange(h) + 0.5) * ch / h).astype(np.int64) // p
    cols = ((np.arange(w) + 0.5) * cw / w).astype(np.int64) // p
    pixels: BoolArray = np.asarray(mask, dtype=bool)[
        np.minimum(rows, gh - 1)[:, None], np.minimum(cols, gw - 1)[None, :]
    ]
    return pixels & (rows < gh)[:, None] & (cols < gw)[None, :]


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
    counts = np.asarray(rle.counts, dtype=np.int64)
    x = counts.copy()
    x[3:] -= counts[1:-2]
    pending = np.ones(x.size, dtype=bool)  # counts with groups still to write
    groups: list[npt.NDArray[np.int64]] = []
    written: list[BoolArray] = []
    while pending.any():
        c = x & 0x1F
        x >>= 5  # arithmetic shift: negative deltas end at -1
        more = np.where(c & 0x10, x != -1, x != 0)
        groups.append(c | (more.astype(np.int64) << 5))
        written.append(pending)
        pending = pending & more
    if not groups:
        return ""
    chars = np.stack(groups, axis=1)[np.stack(written, axis=1)] + 48  # count by count
    return chars.astype(np.uint8).tobytes().decode("ascii")


# --- set runs ------------------------------------------------------------------------------


def rle_runs(rle: Rle) -> tuple[IntArray, IntArray]:
    """Set runs of an Rle: starts and ends (exclusive) in its column-major pixel order.

    Raises:
        ValueError: if the counts do not sum to the mask's H x W pixels.
    """
    h, w = rle.size_hw
    bounds = np.cumsum(np.asarray([0, *rle.counts], dtype=np.int64))
    if int(bounds[-1]) != h * w:
        raise ValueError(f"RLE counts sum to {int(bounds[-1])}, expected {h}x{w}={h * w}")
    return bounds[1:-1:2], bounds[2::2]


def rle_from_runs(starts: IntArray, ends: IntArray, hw: tuple[int, int]) -> Rle:
    """The Rle of an [H, W] mask given its column-major set runs (not touching, increasing).

    Raises:
        ValueError: if a run reaches past the H x W pixels.
    """
    h, w = hw
    if starts.size and int(ends[-1]) > h * w:
        raise ValueError(f"set runs end at pixel {int(ends[-1])}, past {h}x{w}={h * w}")
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, h * w
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds)
    if counts.size > 1 and counts[-1] == 0:  # ends set: no empty run of zeros after it
        counts = counts[:-1]
    return Rle((int(h), int(w)), counts.tolist())


def transpose_runs(
    starts: IntArray, ends: IntArray, hw: tuple[int, int]
) -> tuple[IntArray, IntArray]:
    """Row-major set runs of an [H, W] mask -> its column-major set runs.

    Works on the runs only: pixel (r, c) is a column-major boundary exactly when it differs
    from pixel (r - 1, c), so the boundaries at row r are the columns where rows r - 1 and r
    disagree. Each row is a union of intervals, so that set is the XOR of their edges. Cost
    grows with the number of runs and boundaries, not with H x W. Called with ``hw`` swapped,
    it turns column-major runs back into row-major ones.

    Args:
        starts: [n] first pixel of each set run, row-major (index r * W + c).
        ends: [n] one past the last pixel of each run.
        hw: (height, width) of the mask.

    Returns:
        (starts, ends) of the set runs in column-major order (index c * H + r).
    """
    h, w = hw
    keep = ends > starts
    rows, c0, c1 = _row_segments(starts[keep], ends[keep], w)
    # the edges of row r count for the boundaries at rows r and r + 1 (above and below it)
    edge_rows = np.concatenate((rows, rows, rows + 1, rows + 1))
    edge_cols = np.concatenate((c0, c1, c0, c1))
    keys = _odd(edge_rows * (w + 1) + edge_cols)  # edges met twice cancel
    row, col = np.divmod(keys, w + 1)
    first, last, at = col[0::2], col[1::2], row[0::2]  # [first, last) columns at row `at`
    widths = last - first
    offsets = np.arange(int(widths.sum()), dtype=np.int64) - np.repeat(
        np.cumsum(widths) - widths, widths
    )
    columns = np.repeat(first, widths) + offsets
    # row h of column c and row 0 of column c + 1 are one position: boundaries there cancel
    bounds = _odd(columns * h + np.repeat(at, widths))
    bounds = bounds[bounds < h * w]
    if bounds.size % 2:
        bounds = np.append(bounds, h * w)
    return bounds[0::2], bounds[1::2]


def _row_segments(
    starts: IntArray, ends: IntArray, width: int
) -> tuple[IntArray, IntArray, IntArray]:
    """Row-major runs cut at row ends: (row, first column, end column) of each piece."""
    first_row, last_row = starts // width, (ends - 1) // width
    pieces = last_row - first_row + 1
    run = np.repeat(np.arange(starts.size), pieces)
    rows = np.repeat(first_row, pieces) + (
        np.arange(run.size, dtype=np.int64) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    )
    c0 = np.where(rows == first_row[run], starts[run] - rows * width, 0)
    c1 = np.where(rows == last_row[run], ends[run] - rows * width, width)
    return rows, c0, c1


def _odd(values: IntArray) -> IntArray:
    """The values occurring an odd number of times, sorted."""
    unique, counts = np.unique(values, return_counts=True)
    odd: IntArray = unique[counts % 2 == 1]
    return odd


def rle_box(rle: Rle) -> Box | None:
    """Tight box of the set pixels of an Rle (max exclusive), read from its runs; None if empty.

    Equal to ``mask_to_box(rle_decode(rle))`` without decoding.
    """
    h = rle.size_hw[0]
    starts, ends = rle_runs(rle)
    starts, ends = starts[ends > starts], ends[ends > starts]
    if starts.size == 0:
        return None
    first_col, last_col = starts // h, (ends - 1) // h
    spans = first_col != last_col  # a run over two columns or more covers rows 0 .. h - 1
    y0 = int(np.where(spans, 0, starts % h).min())
    y1 = int(np.where(spans, h, (ends - 1) % h + 1).max())
    return Box(float(first_col.min()), float(y0), float(last_col.max() + 1), float(y1))
