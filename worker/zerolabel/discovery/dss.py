"""Deep spectral segmentation (Melas-Kyriazi et al., CVPR 2022), single-object variant.

The Fiedler vector of the patch graph whose edges are the positive cosine similarities of the
keys splits the image in two; the smaller side is the object.

Components: the object is the largest 8-connected component of that side (diagonal neighbours
join), as the authors take it with ``skimage.measure.label``, whose default for a 2-D mask is
full connectivity; the other methods here label 4-connected, as their authors do with
``scipy.ndimage.label``. The authors' input is the full-resolution image cropped on the bottom
and right to a whole number of patches (preset ``paper``, :mod:`zerolabel.methods`), where the
other methods pad.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zerolabel.discovery.components import largest_component
from zerolabel.discovery.graph import cut_score, second_smallest_eigenvector, validate_keys
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked

EDGE_FLOOR = 1e-5
"""Weight of every edge whose cosine similarity is at most this (negative ones included): it
keeps patches with an all-zero key, or with no positive similarity, connected to the graph,
which the eigensolver needs; it is far below any similarity that matters."""


@checked("dss")
def dss(keys: torch.Tensor, grid_hw: tuple[int, int]) -> list[ObjectMask]:
    """One object per image, as deep spectral methods find it.

    1. Keys L2-normalised, ``S`` = cosine similarity, ``W = relu(S)`` (floored at
       :data:`EDGE_FLOOR`).
    2. ``v``: second-smallest generalized eigenvector of ``(D - W) v = lambda D v`` (the fast
       solver of :mod:`zerolabel.discovery.graph`).
    3. Foreground ``v > 0``, replaced by its complement when it holds more than half of the
       patches (the object is the smaller side).
    4. The largest 8-connected component of the foreground (ties: the first in row-major
       order), the authors' rule.

    Score: ``clamp(1 - lambda, 0, 1)`` (:func:`~zerolabel.discovery.graph.cut_score`), near 1
    for a clean cut and 0 for a graph without structure, where no object is returned.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.

    Returns:
        At most one object with an [h, w] bool mask on ``keys``' device; [] when N < 2 or the
        graph has no structure.
    """
    validate_keys(keys, grid_hw)
    if keys.shape[0] < 2:
        return []
    unit = F.normalize(keys.detach().float(), p=2, dim=1)
    affinity = (unit @ unit.T).clamp(min=EDGE_FLOOR)
    v, eigenvalue = second_smallest_eigenvector(affinity)
    score = cut_score(eigenvalue)
    if score == 0.0:
        return []
    foreground = v > 0
    if int(foreground.sum()) * 2 > foreground.numel():
        foreground = ~foreground
    mask = largest_component(foreground.reshape(grid_hw), connectivity=8)
    if not mask.any():
        return []
    return [ObjectMask(mask=mask, score=score)]
