"""TokenCut (Wang et al., CVPR 2022): one object from a normalized cut of the patch graph.

The component holding the seed is 4-connected (edge neighbours only), as the authors label it
with ``scipy.ndimage.label``'s default structure. Their input, from LOST's evaluation code, is
the full-resolution image zero-padded to whole patches (preset ``paper``,
:mod:`zerolabel.methods`).
"""

from __future__ import annotations

import torch

from zerolabel.discovery.graph import (
    bipartition,
    component_containing,
    cut_score,
    ncut_graph,
    second_smallest_eigenvector,
    validate_keys,
)
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked


@checked("tokencut")
def tokencut(
    keys: torch.Tensor, grid_hw: tuple[int, int], *, tau: float = 0.2, eps: float = 1e-5
) -> list[ObjectMask]:
    """One object per image, as TokenCut computes it.

    Cosine graph ``W = 1 if S > tau else eps``; second-smallest generalized eigenvector of
    ``(D - W) v = lambda D v``; foreground ``v > mean(v)``, flipped unless it holds the seed
    ``argmax |v|``; the 4-connected component holding the seed.

    Score: ``clamp(1 - lambda, 0, 1)`` (:func:`~zerolabel.discovery.graph.cut_score`).
    ``lambda`` is the normalized-cut cost of the bipartition (near 0 for a clean cut, 1 when
    the graph has no structure: score 0, which the pipeline does not emit).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        tau: cosine similarity above which two patches are fully connected.
        eps: weight of all other edges (> 0).

    Returns:
        One object with an [h, w] bool mask on ``keys``' device; [] when N < 2.
    """
    validate_keys(keys, grid_hw)
    if keys.shape[0] < 2:
        return []
    v, eigenvalue = second_smallest_eigenvector(ncut_graph(keys, tau, eps))
    foreground, seed = bipartition(v)
    mask = component_containing(foreground.reshape(grid_hw), divmod(seed, grid_hw[1]))
    return [ObjectMask(mask=mask, score=cut_score(eigenvalue))]
