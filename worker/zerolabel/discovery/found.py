"""FOUND (Simeoni et al., CVPR 2023): find the background first; the object is the rest.

Coarse mask, as the authors' code computes it from the last block's CLS attention ``A``
([heads, N], CLS to patches) and keys ``K`` ([N, D], heads concatenated):

1. Head weights by sparsity: ``Q_i`` = fraction of head ``i``'s patches whose attention is
   above the mean attention of the image (ONE mean over all heads and patches, as in the
   authors' code, not one per head); ``w_i = log(sum_j (Q_j + e) / (Q_i + e))``, ``e = 1e-10``
   (a head attending to few patches weighs more).
2. Background seed: the patch with the least weighted attention ``sum_i w_i A_i`` (first index
   on ties).
3. Weighted keys: each head's ``D / heads`` block of the keys scaled by its ``w_i``, then the
   whole vector L2-normalised; background = cosine with the seed's weighted key ``> tau``
   (0.3). The seed itself always counts as background.
4. Object mask = the complement; the box comes from its largest 4-connected component, as the
   authors' CorLoc evaluation takes it (``scipy.ndimage.label``'s default structure), on the
   full-resolution image zero-padded to whole patches (preset ``paper``).

Optional head (what the paper trains, 72.5 / 76.1 / 62.9 CorLoc): a 1x1 convolution ``D -> 1``
on the raw keys; when a fitted ``found-head`` file gives ``head_weight`` [D] and ``head_bias``
[1], the mask is ``sigmoid(K w + b) > 0.5`` instead (``zerolabel train-found`` fits it).

Score: the contrast of the region, in [0, 1]. Coarse: ``(mean cos(seed) over the other
patches - mean cos(seed) over the object) / 2``; with the head: ``mean p over the object -
mean p over the other patches`` (``p`` the head's probability). 0 (no region) when the object
is empty, covers the grid, or does not differ from the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zerolabel.discovery.components import largest_component
from zerolabel.discovery.graph import validate_keys
from zerolabel.discovery.maps import contrast
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked

SPARSITY_EPS = 1e-10
"""Added to every ``Q_i`` before the logarithm, as the authors do (a head above nowhere)."""


def head_weights(attention: torch.Tensor) -> torch.Tensor:
    """``w_i = log(sum_j (Q_j + e) / (Q_i + e))`` with ``Q_i`` the fraction of head ``i``'s
    patches above the mean attention of all heads and patches.

    Args:
        attention: [heads, N] CLS-to-patch attention.

    Returns:
        [heads] float32 weights (>= 0; equal heads weigh ``log(heads)``).
    """
    attention = attention.float()
    above = (attention > attention.mean()).float().mean(dim=1) + SPARSITY_EPS
    return torch.log(above.sum() / above)


def background_similarity(keys: torch.Tensor, attention: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cosine of every patch's weighted key with the background seed's, and the seed.

    Args:
        keys: [N, D] patch keys, D divisible by the number of heads.
        attention: [heads, N] CLS-to-patch attention.

    Returns:
        [N] float32 similarities and the seed's patch index.
    """
    heads, n = attention.shape
    if keys.shape[1] % heads:
        raise ValueError(f"keys of width {keys.shape[1]} do not split into {heads} heads")
    weights = head_weights(attention).to(keys.device)
    weighted = keys.float().reshape(n, heads, -1) * weights[None, :, None]
    unit = F.normalize(weighted.reshape(n, -1), p=2, dim=1)
    seed = int(torch.argmin((attention.float().to(keys.device) * weights[:, None]).sum(0)))
    return unit @ unit[seed], seed


def coarse_object_mask(
    keys: torch.Tensor, grid_hw: tuple[int, int], attention: torch.Tensor, tau: float = 0.3
) -> torch.Tensor:
    """FOUND's object mask before any component is chosen: not similar to the background.

    Args:
        keys: [N, D] patch keys, row-major.
        grid_hw: (h, w) of the patch grid.
        attention: [heads, N] CLS-to-patch attention.
        tau: cosine above which a patch is background.

    Returns:
        [h, w] bool (the training target of the head).
    """
    _check(keys, grid_hw, attention)
    return _complement(*background_similarity(keys, attention), grid_hw, tau)


@checked("found")
def found(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    attention: torch.Tensor,
    head_weight: torch.Tensor | None = None,
    head_bias: torch.Tensor | None = None,
    tau: float = 0.3,
) -> list[ObjectMask]:
    """One object per image: the largest component of FOUND's (or its head's) object mask.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        attention: [heads, N] CLS-to-patch attention of the last block.
        head_weight: [D] weights of a trained 1x1 head (a ``found-head`` fitted file).
        head_bias: [1] its bias (given together with ``head_weight``).
        tau: cosine with the background seed above which a patch is background (coarse mask).

    Returns:
        One object with an [h, w] bool mask on ``keys``' device, or [] (see the score).
    """
    _check(keys, grid_hw, attention)
    if (head_weight is None) != (head_bias is None):
        raise ValueError("a FOUND head needs both head_weight and head_bias")
    if keys.shape[0] == 0:
        return []
    if head_weight is not None and head_bias is not None:
        if head_weight.shape != (keys.shape[1],) or head_bias.numel() != 1:
            raise ValueError(
                f"the FOUND head takes {head_weight.shape[-1]}-d keys, these are "
                f"{keys.shape[1]}-d: train it again (zerolabel train-found) for this backbone"
            )
        values = torch.sigmoid(keys.float() @ head_weight.float() + head_bias.float().reshape(()))
        mask, scale = (values > 0.5).reshape(grid_hw), 1.0
    else:
        similarity, seed = background_similarity(keys, attention)
        mask = _complement(similarity, seed, grid_hw, tau)
        values, scale = -similarity, 2.0  # object patches are the least similar to the seed
    component = largest_component(mask)
    score = contrast(values, component.flatten(), scale)
    return [ObjectMask(mask=component, score=score)] if score > 0.0 else []


def _complement(
    similarity: torch.Tensor, seed: int, grid_hw: tuple[int, int], tau: float
) -> torch.Tensor:
    """[h, w] object mask: neither the seed nor similar to it."""
    background = similarity > tau
    background[seed] = True
    return (~background).reshape(grid_hw)


def _check(keys: torch.Tensor, grid_hw: tuple[int, int], attention: torch.Tensor) -> None:
    validate_keys(keys, grid_hw)
    if attention.ndim != 2 or attention.shape[1] != keys.shape[0] or attention.shape[0] < 1:
        raise ValueError(
            f"attention must be [heads, {keys.shape[0]}] CLS-to-patch attention, got shape "
            f"{tuple(attention.shape)}"
        )
