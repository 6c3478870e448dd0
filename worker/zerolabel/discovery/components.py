"""Connected components of patch masks (4-connectivity), one mask or a stack of them at once."""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import torch

_CROSS = scipy.ndimage.generate_binary_structure(2, 1)
"""4-connectivity: edge neighbours only, no diagonals."""


def largest_component(mask: torch.Tensor) -> torch.Tensor:
    """The largest 4-connected component of ``mask``; on equal areas the one whose first cell
    comes first in row-major order.

    Args:
        mask: [h, w] bool grid.

    Returns:
        [h, w] bool on ``mask``'s device; all False when ``mask`` is.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w], got shape {tuple(mask.shape)}")
    labels, count = scipy.ndimage.label(mask.detach().cpu().numpy().astype(bool), _CROSS)
    if count == 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    best = int(np.argmax(areas)) + 1  # argmax takes the lowest label (first in raster order)
    return torch.from_numpy(labels == best).to(mask.device)


def label_stack(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """4-connected components of every mask of a stack, in one labelling pass.

    Components never join across masks of the stack; labels are unique over the whole stack
    and numbered in (mask, row, col) order of their first cell.

    Args:
        masks: [S, h, w] bool stack.

    Returns:
        ``labels``: [S, h, w] int64 on the CPU, 0 outside every component.
        ``areas``: [count + 1] int64 on the CPU, the area of each label (``areas[0]`` is the
        number of unlabelled cells).
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [S, h, w], got shape {tuple(masks.shape)}")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _CROSS  # neighbours within one mask only
    labels, count = scipy.ndimage.label(masks.detach().cpu().numpy().astype(bool), structure)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    return torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(areas.astype(np.int64))
