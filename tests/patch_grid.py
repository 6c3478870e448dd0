"""Whether a pixel mask follows the ViT patch grid (what an unrefined mask does)."""

from __future__ import annotations

import numpy as np
from zerolabel.geometry import Frame, patch_mask_to_pixel_mask
from zerolabel.vit.preprocess import content_size


def maskcut_frame(original_hw: tuple[int, int], patch_size: int = 16) -> Frame:
    """The frame of MaskCut's default input (longer side capped at 480 px, aspect kept)."""
    return Frame(original_hw, content_size(original_hw, 480), patch_size)


def is_patch_aligned(mask: np.ndarray, frame: Frame) -> bool:
    """True when ``mask`` is the pixel mask of some patch mask: every original pixel has the
    value of the patch cell it samples (the pipeline's nearest upsampling), and all pixels of
    one cell agree."""
    (h, w), (ch, cw), p = frame.original_hw, frame.content_hw, frame.patch_size
    rows = ((np.arange(h) + 0.5) * ch / h).astype(np.int64) // p
    cols = ((np.arange(w) + 0.5) * cw / w).astype(np.int64) // p
    cells = np.zeros(frame.grid_hw, dtype=bool)
    np.logical_or.at(cells, (rows[:, None], cols[None, :]), np.asarray(mask, dtype=bool))
    return bool(np.array_equal(patch_mask_to_pixel_mask(cells, frame), mask))
