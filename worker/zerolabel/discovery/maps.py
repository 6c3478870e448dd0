"""The contrast score of a region of a per-patch map (FOUND, representer points); their
largest connected component is :func:`zerolabel.discovery.components.largest_component`.
"""

from __future__ import annotations

import torch

NO_CONTRAST_ATOL = 1e-6
"""Contrasts at most this are 0: a map without structure (rounding alone separates regions)."""


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
