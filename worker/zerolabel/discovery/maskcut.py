"""MaskCut (CutLER, Wang et al., CVPR 2023): several objects by repeated normalized cuts.

Each iteration cuts the TokenCut graph of the patches not yet claimed (their keys are zeroed),
orients the cut with an object-centric prior (the background holds the grid corners), keeps
the component around the eigenvector's peak, and filters it against the previous iteration.
The steps keep the authors' names; the dense CRF post-processing is not part of this module.

Faithful details worth knowing:

- The previous-iteration mask used by the IoU filter is the *raw* component of the last
  iteration, or an all-zero mask when that iteration's component was dropped (as in the
  authors' code). A dropped iteration therefore leaves the features unchanged, the next
  iteration finds the same component again, and this time its IoU with the (empty) previous
  mask is 0, so only the area test can drop it.
- The authors read the eigenvector's sign as LAPACK returns it, which is arbitrary. Here it is
  canonical (largest-magnitude entry positive, see :mod:`zerolabel.discovery.graph`), so the
  seed always lies in ``v > mean(v)`` and the flip happens exactly when that side holds three or
  four grid corners.
- Earlier objects are subtracted on the patch grid. The authors subtract after nearest
  upsampling to pixels; every pixel of a patch shares its value, so the result is the same.
- The component around the peak is 4-connected (edge neighbours only): the authors label it
  with ``scipy.ndimage.label``'s default structure, as TokenCut does.
- The authors' input is a 480 x 480 square resized with PIL's LANCZOS filter (preset
  ``paper``, :mod:`zerolabel.methods`); by default the aspect ratio is kept.
"""

from __future__ import annotations

import torch

from zerolabel.discovery.graph import (
    component_containing,
    cut_score,
    ncut_graph,
    peak_index,
    salient_side,
    second_smallest_eigenvector,
    validate_keys,
)
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked


@checked("maskcut")
def maskcut(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    tau: float = 0.15,
    eps: float = 1e-5,
    max_objects: int = 3,
    min_area_frac: float = 0.01,
    max_iou_with_previous: float = 0.5,
) -> list[ObjectMask]:
    """Up to ``max_objects`` disjoint objects, as MaskCut computes them on the patch grid.

    Score per object: :func:`~zerolabel.discovery.graph.cut_score` of the cut that produced
    it (0 for a cut without structure, which the pipeline does not emit).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        tau: cosine similarity above which two patches are fully connected.
        eps: weight of all other edges (> 0).
        max_objects: number of cuts (the authors' N).
        min_area_frac: from the second cut on, a component covering at most this fraction of
            the grid is dropped.
        max_iou_with_previous: from the second cut on, a component whose IoU with the previous
            iteration's component exceeds this is dropped.

    Returns:
        Objects in discovery order, each an [h, w] bool mask on ``keys``' device with the
        patches of earlier objects removed; empty masks are left out.
    """
    validate_keys(keys, grid_hw)
    if keys.shape[0] < 2:
        return []
    feats = keys.detach().float()
    claimed = torch.zeros(grid_hw, dtype=torch.bool, device=keys.device)
    previous = claimed.clone()
    objects: list[ObjectMask] = []
    for i in range(max_objects):
        if claimed.all():
            break  # nothing left to cut: every later object would be empty
        feats = mask_out(feats, claimed)
        mask, eigenvalue = salient_component(feats, grid_hw, tau=tau, eps=eps)
        if i >= 1 and not is_new_object(mask, previous, min_area_frac, max_iou_with_previous):
            mask = torch.zeros_like(mask)  # an all-zero "previous" for the next iteration
        kept = mask & ~claimed
        if kept.any():
            objects.append(ObjectMask(mask=kept, score=cut_score(eigenvalue)))
        claimed, previous = claimed | mask, mask
    return objects


def mask_out(feats: torch.Tensor, claimed: torch.Tensor) -> torch.Tensor:
    """Zero the features of the patches already claimed by earlier objects.

    Args:
        feats: [N, D] patch features.
        claimed: [h, w] bool, True on patches of earlier objects.

    Returns:
        [N, D] features, a new tensor.
    """
    return feats * (~claimed.flatten()).to(feats.dtype)[:, None]


def salient_component(
    feats: torch.Tensor, grid_hw: tuple[int, int], *, tau: float, eps: float
) -> tuple[torch.Tensor, float]:
    """One normalized cut: the oriented foreground's component around the seed.

    Args:
        feats: [N, D] patch features (claimed patches zeroed).
        grid_hw: (h, w) of the patch grid.
        tau: cosine similarity above which two patches are fully connected.
        eps: weight of all other edges.

    Returns:
        [h, w] bool component (never empty: it holds the seed) and the cut's eigenvalue.
    """
    v, eigenvalue = second_smallest_eigenvector(ncut_graph(feats, tau, eps))
    foreground, seed = oriented_foreground(v, grid_hw)
    mask = component_containing(foreground.reshape(grid_hw), divmod(seed, grid_hw[1]))
    return mask, eigenvalue


def oriented_foreground(v: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """Foreground ``v > mean(v)``, flipped when it holds >= 3 grid corners or misses the seed.

    The seed is ``argmax |v|`` for the test; afterwards it is ``argmax v`` of the vector as
    oriented (``argmax -v`` after a flip), so it always lies in the returned foreground. Ties
    are broken as in :func:`~zerolabel.discovery.graph.peak_index`.

    Args:
        v: [N] eigenvector.
        grid_hw: (h, w) of the patch grid.

    Returns:
        [N] bool foreground and the seed's patch index.
    """
    foreground = salient_side(v)
    peak = peak_index(v.abs())
    if count_fg_corners(foreground, grid_hw) >= 3 or not foreground[peak]:
        return ~foreground, peak_index(-v)
    return foreground, peak_index(v)


def count_fg_corners(foreground: torch.Tensor, grid_hw: tuple[int, int]) -> int:
    """How many of the four grid corners are foreground.

    Args:
        foreground: [N] or [h, w] bool.
        grid_hw: (h, w) of the patch grid.
    """
    grid = foreground.reshape(grid_hw)
    return int(grid[0, 0]) + int(grid[0, -1]) + int(grid[-1, 0]) + int(grid[-1, -1])


def is_new_object(
    mask: torch.Tensor, previous: torch.Tensor, min_area_frac: float, max_iou: float
) -> bool:
    """The authors' filter for cuts after the first: not a repeat and not a speck.

    Args:
        mask: [h, w] bool component of this iteration.
        previous: [h, w] bool component of the previous iteration (all False if dropped).
        min_area_frac: a mask covering at most this fraction of the grid is a speck.
        max_iou: a mask whose IoU with ``previous`` exceeds this is a repeat.
    """
    area_frac = mask.sum().item() / mask.numel()
    return mask_iou(mask, previous) <= max_iou and area_frac > min_area_frac


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two bool masks of the same shape (0 when both are empty)."""
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0
