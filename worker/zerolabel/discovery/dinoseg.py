"""DINO-seg (Caron et al., 2021; the baseline of LOST): the object one attention head looks at.

The CLS token of a DINO ViT attends to the salient object. One last-block head's CLS-to-patch
attention, thresholded to the patches that hold a given share of its mass, outlines it; the
largest connected piece is the object.

As in LOST's DINO-seg baseline (the published numbers): the piece is 4-connected, labelled with
``scipy.ndimage.label``'s default structure, on the full-resolution image zero-padded to whole
patches (preset ``paper``). Two slips of that code are not reproduced: its loop over component
sizes leaves out the last label, and its boxes are not clipped to the image.
"""

from __future__ import annotations

import torch

from zerolabel.discovery.components import largest_component
from zerolabel.discovery.graph import NO_STRUCTURE_ATOL, validate_keys
from zerolabel.discovery.objects import ObjectMask
from zerolabel.errors import ConfigError
from zerolabel.methods import checked


@checked("dinoseg")
def dinoseg(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    attention: torch.Tensor,
    head: int = 4,
    mass: float = 0.6,
) -> list[ObjectMask]:
    """One object per image from one head's CLS attention.

    1. ``a`` = the CLS-to-patch attention of head ``head``, divided by its sum over the patches.
    2. Patches sorted by attention, highest first (stable: ties go to the lowest index); a
       patch is kept while the attention of the patches before it is below ``mass``: the
       smallest top set holding ``mass`` of the attention.
    3. The largest 4-connected component of the kept patches.

    Score: ``mass inside the mask - area fraction of the mask``, the attention the object
    holds beyond what a mask of its size would hold under uniform attention, in [0, 1]: near 1
    for attention concentrated on a small region, 0 for uniform attention (no object).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major (only checked: the method
            reads the attention).
        grid_hw: (h, w) of the patch grid.
        attention: [heads, N] CLS-to-patch attention of the last block.
        head: which head's attention to read (LOST's baseline reads head 4).
        mass: share of the attention mass the kept patches hold, in (0, 1].

    Returns:
        At most one object with an [h, w] bool mask on ``keys``' device; [] when the attention
        has no structure (score 0) or no mass.

    Raises:
        ConfigError: ``head`` is not a head of the backbone (the message names the range).
        ValueError: ill-shaped inputs or ``mass`` outside (0, 1].
    """
    validate_keys(keys, grid_hw)
    _check_attention(attention, keys.shape[0], head)
    weights = attention[head].detach().to(device=keys.device, dtype=torch.float64).clamp(min=0)
    total = weights.sum()
    if keys.shape[0] == 0 or not bool(total > 0):
        return []
    share = weights / total
    order = torch.sort(share, descending=True, stable=True).indices
    before = torch.cumsum(share[order], dim=0) - share[order]  # mass of the higher patches
    kept = torch.zeros_like(share, dtype=torch.bool)
    kept[order[before < mass]] = True
    mask = largest_component(kept.reshape(grid_hw))
    score = float(share[mask.flatten()].sum()) - float(mask.sum()) / mask.numel()
    if score <= NO_STRUCTURE_ATOL:
        return []
    return [ObjectMask(mask=mask, score=min(score, 1.0))]


def _check_attention(attention: torch.Tensor, n: int, head: int) -> None:
    """Raise unless ``attention`` is [heads, n] floating point and ``head`` one of its heads."""
    if attention.ndim != 2 or attention.shape[1] != n or not attention.is_floating_point():
        raise ValueError(
            f"attention must be [heads, {n}] floating point CLS-to-patch attention, got "
            f"{attention.dtype} of shape {tuple(attention.shape)}"
        )
    heads = attention.shape[0]
    if not 0 <= head < heads:
        raise ConfigError(
            f"dinoseg head {head} does not exist: the backbone has {heads} heads; "
            f"set the parameter head to 0..{heads - 1}"
        )
