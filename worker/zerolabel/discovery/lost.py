"""LOST (Siméoni et al., BMVC 2021): the object around the least-connected patch.

Patches of an object correlate positively with fewer patches than background patches do, so
the patch with the fewest positive correlations seeds the object, and the low-degree patches
that agree with it vote for the mask.

The component holding the seed is 4-connected (edge neighbours only), as the authors label it
with ``scipy.ndimage.label``'s default structure. Their input is the full-resolution image
zero-padded to whole patches (preset ``paper``, :mod:`zerolabel.methods`).
"""

from __future__ import annotations

import torch

from zerolabel.discovery.graph import component_containing, validate_keys
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked


@checked("lost")
def lost(keys: torch.Tensor, grid_hw: tuple[int, int], *, k_patches: int = 100) -> list[ObjectMask]:
    """One object per image, exactly as LOST computes it.

    1. ``A = F F^T`` on the raw keys.
    2. Degree ``d_p = #{q : A_pq > 0}``, the diagonal included: ``A_pp = |f_p|^2 > 0`` adds one
       to every patch with a non-zero key, which shifts all those degrees alike and so leaves
       the order as it would be without the diagonal (all-zero keys aside).
    3. Patches sorted by degree, stable, so ties go to the lowest index; the first is the seed.
    4. Expansion set: those of the ``k_patches`` lowest-degree patches with ``A[seed, q] > 0``.
    5. Mask ``sum_{s in S} A[s, q] > 0``, reduced to its 4-connected component holding the seed.

    Score: ``1 - d_seed / N``, the fraction of patches the seed does not correlate with (0 when
    every patch correlates with every other: no structure, which the pipeline does not emit).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        k_patches: how many lowest-degree patches may join the seed (>= 1).

    Returns:
        At most one object with an [h, w] bool mask on ``keys``' device; [] when N == 0 or the
        seed has no support (an all-zero key).
    """
    validate_keys(keys, grid_hw)
    n = keys.shape[0]
    if n == 0:
        return []
    feats = keys.float()
    affinity = feats @ feats.T  # [N, N]
    degree = (affinity > 0).sum(dim=1)  # low degree = likely foreground
    order = torch.argsort(degree, stable=True)
    seed, candidates = int(order[0]), order[:k_patches]
    similar = candidates[affinity[seed, candidates] > 0]  # seed expansion, holds the seed
    votes = affinity[similar].sum(dim=0).reshape(grid_hw)
    mask = component_containing(votes > 0, divmod(seed, grid_hw[1]))
    if not mask.any():
        return []
    return [ObjectMask(mask=mask, score=1.0 - int(degree[seed]) / n)]
