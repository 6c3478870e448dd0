"""Pure helpers of the methods that threshold a per-patch map (FOUND, representer points):
the largest connected component of a patch mask and the contrast score of a region.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

NO_CONTRAST_ATOL = 1e-6
"""Contrasts at most this are 0: a map without structure (rounding alone separates regions)."""


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 4-connected component of ``mask`` (ties: the one met first in row-major order).

    Args:
        mask: [h, w] bool grid.

    Returns:
        [h, w] bool on ``mask``'s device; all False when ``mask`` is.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w], got shape {tuple(mask.shape)}")
    labels, count = scipy.ndimage.label(mask.detach().cpu().numpy().astype(bool))
    if count == 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0  # the background of the labelling
    return torch.from_numpy(labels == int(sizes.argmax())).to(mask.device)


def contrast(values: torch.Tensor, region: torch.Tensor, scale: float) -> float:
    """``(mean inside - mean outside) / scale`` clamped to [0, 1]; 0 when either side is empty
    or the difference is within :data:`NO_CONTRAST_ATOL`.

    Args:
        values: [N] per-patch values (a similarity or a probability).
        region: [N] bool, the patches of the object.
        scale: the widest possible difference of the means (2 for cosines, 1 for probabilities).
    """
    inside, outside = values[region], values[~region]
    if inside.numel() == 0 or outside.numel() == 0:
        return 0.0
    score = float((inside.double().mean() - outside.double().mean()) / scale)
    return 0.0 if score <= NO_CONTRAST_ATOL else min(score, 1.0)
