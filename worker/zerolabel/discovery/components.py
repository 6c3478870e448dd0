"""Connected components of patch masks, one mask or a stack of them at once.

Two neighbourhoods, as the methods' authors label their masks: 4-connectivity (edge neighbours,
``scipy.ndimage.label``'s default: LOST, TokenCut, MaskCut, DINO-seg, FOUND, ProMerge) and
8-connectivity (diagonal neighbours too, ``skimage.measure.label``'s default for 2-D masks: DSS).
Labels are numbered in row-major order of each component's first cell under both.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.ndimage
import torch

CONNECTIVITIES = (4, 8)
"""The neighbourhoods a component may be taken with: edge neighbours, or diagonal ones too."""


def _structure(connectivity: int) -> npt.NDArray[np.bool_]:
    """The 3 x 3 neighbourhood of ``connectivity`` (4: a cross, 8: the full square).

    Raises:
        ValueError: a connectivity other than 4 or 8.
    """
    if connectivity not in CONNECTIVITIES:
        raise ValueError(
            f"connectivity must be 4 or 8 (neighbours of a cell), got {connectivity!r}"
        )
    structure: npt.NDArray[np.bool_] = scipy.ndimage.generate_binary_structure(
        2, 1 if connectivity == 4 else 2
    )
    return structure


def largest_component(mask: torch.Tensor, connectivity: int = 4) -> torch.Tensor:
    """The largest connected component of ``mask``; on equal areas the one whose first cell
    comes first in row-major order.

    Args:
        mask: [h, w] bool grid.
        connectivity: 4 (edge neighbours only) or 8 (diagonal neighbours too).

    Returns:
        [h, w] bool on ``mask``'s device; all False when ``mask`` is.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w], got shape {tuple(mask.shape)}")
    structure = _structure(connectivity)
    labels, count = scipy.ndimage.label(mask.detach().cpu().numpy().astype(bool), structure)
    if count == 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    best = int(np.argmax(areas)) + 1  # argmax takes the lowest label (first in raster order)
    return torch.from_numpy(labels == best).to(mask.device)


def label_stack(masks: torch.Tensor, connectivity: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Connected components of every mask of a stack, in one labelling pass.

    Components never join across masks of the stack; labels are unique over the whole stack
    and numbered in (mask, row, col) order of their first cell.

    Args:
        masks: [S, h, w] bool stack.
        connectivity: 4 (edge neighbours only) or 8 (diagonal neighbours too), within a mask.

    Returns:
        ``labels``: [S, h, w] int64 on the CPU, 0 outside every component.
        ``areas``: [count + 1] int64 on the CPU, the area of each label (``areas[0]`` is the
        number of unlabelled cells).
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be [S, h, w], got shape {tuple(masks.shape)}")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _structure(connectivity)  # neighbours within one mask only
    labels, count = scipy.ndimage.label(masks.detach().cpu().numpy().astype(bool), structure)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    return torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(areas.astype(np.int64))
