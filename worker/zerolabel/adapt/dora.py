"""DoRA's discover-and-track (Venkataramanan et al., ICLR 2024), as pure tensor functions.

For each clip, on the teacher's last block at the clip's first frame:

1. :func:`object_prototypes`: ``k`` heads (the same random ones for the whole step) give each
   an object prototype, the sum of the patch queries weighted by that head's [CLS] attention.
2. :func:`sinkhorn_knopp`: the similarities of the frame's normalised output tokens to the
   prototypes become an assignment whose ``k`` objects share the patches evenly, so no two
   prototypes settle on the same object.
3. :func:`refine_prototypes`: each prototype becomes the assignment-weighted sum of the tokens.

Then, on every frame of the clip, :func:`tracking_maps` attends from each prototype to the
frame's patch keys (softmax over the patches), :func:`object_masks` keeps the patches above
the map's mean once it is L2-normalised, and :func:`masked_views` multiplies the student's
copy of the frame by each object's mask, upsampled to pixels: ``k`` views of the frame, each
showing one tracked object (multi-object masking). The teacher sees the unmasked frame.

One deliberate difference: the mask threshold is the mean of each map (one clip, one object,
one frame), where the authors' code takes the mean over the maps of the same object and frame
in every clip of the process's batch; a batch's other clips then leave each mask unchanged, and
a step split over processes computes the masks of a single process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def object_prototypes(cls_attention: Tensor, queries: Tensor, heads: Tensor) -> Tensor:
    """One prototype per chosen head: its [CLS]-to-patch attention times the patch queries.

    Args:
        cls_attention: [B, H, N] the [CLS] row of the attention, patch columns (softmax over
            all tokens), per head.
        queries: [B, N, D] patch queries, heads concatenated.
        heads: [k] long, the chosen heads.

    Returns:
        [B, k, D].
    """
    return torch.einsum("bkn,bnd->bkd", cls_attention[:, heads], queries)


def sinkhorn_knopp(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 30) -> Tensor:
    """Balanced soft assignment of N patches to k objects (per image).

    ``exp(scores / epsilon)`` is scaled alternately so that every object receives ``N / k``
    of the mass and every patch gives 1, starting with the objects and ending with the patches
    (which therefore hold exactly). DoRA's code takes 30 iterations at epsilon 0.05.

    Args:
        scores: [B, N, k] similarities.
        epsilon: temperature of the exponential.
        iterations: scaling rounds.

    Returns:
        [B, N, k] with every row summing to 1 and every column to about N / k.
    """
    logits = scores.float() / epsilon
    logits = logits - logits.amax(dim=(1, 2), keepdim=True)  # exp stays finite
    q = torch.exp(logits)
    q = q / q.sum(dim=(1, 2), keepdim=True)
    patches, objects = q.shape[1], q.shape[2]
    for _ in range(iterations):
        q = q / (q.sum(dim=1, keepdim=True) * objects)  # each object: 1 / k
        q = q / (q.sum(dim=2, keepdim=True) * patches)  # each patch: 1 / N
    return q * patches


def refine_prototypes(assignment: Tensor, tokens: Tensor) -> Tensor:
    """[B, k, C] prototypes: the assignment-weighted sums of the L2-normalised tokens.

    Args:
        assignment: [B, N, k] from :func:`sinkhorn_knopp`.
        tokens: [B, N, C] L2-normalised output tokens of the patches.
    """
    return assignment.transpose(1, 2) @ tokens


def tracking_maps(prototypes: Tensor, keys: Tensor) -> Tensor:
    """Cross-attention of the prototypes with a frame's patch keys.

    Args:
        prototypes: [B, k, C].
        keys: [B, N, C] the frame's last-block patch keys, heads concatenated.

    Returns:
        [B, k, N]: for each object a softmax over the patches.
    """
    scale = prototypes.shape[-1] ** -0.5
    maps: Tensor = (prototypes @ keys.transpose(1, 2) * scale).softmax(dim=-1)
    return maps


def object_masks(maps: Tensor, grid_hw: tuple[int, int]) -> Tensor:
    """[B, k, h, w] bool: the patches of each map above its mean once L2-normalised.

    Args:
        maps: [B, k, N] from :func:`tracking_maps`, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
    """
    normalised = F.normalize(maps, dim=-1)
    kept = normalised > normalised.mean(dim=-1, keepdim=True)
    return kept.reshape(*maps.shape[:2], *grid_hw)


def masked_views(images: Tensor, masks: Tensor) -> Tensor:
    """Each image multiplied by each of its object masks, upsampled to its pixels (nearest).

    Args:
        images: [B, 3, H, W] normalised views, H and W whole multiples of the mask grid.
        masks: [B, k, h, w] bool.

    Returns:
        [B, k, 3, H, W]: zero outside the object.
    """
    factor = images.shape[-2] // masks.shape[-2], images.shape[-1] // masks.shape[-1]
    pixels = masks.repeat_interleave(factor[0], dim=-2).repeat_interleave(factor[1], dim=-1)
    return images[:, None] * pixels[:, :, None].to(images.dtype)


def track(
    cls_attention: Tensor,
    queries: Tensor,
    tokens: Tensor,
    keys: Tensor,
    heads: Tensor,
    grid_hw: tuple[int, int],
    *,
    epsilon: float = 0.05,
    iterations: int = 30,
) -> Tensor:
    """Discover objects at the first frame of each clip and track them through its frames.

    Args:
        cls_attention: [B, H, N] of the first frames.
        queries: [B, N, D] of the first frames.
        tokens: [B, N, C] output tokens of the first frames (normalised here).
        keys: [B, F, N, C] patch keys of every frame of the clips.
        heads: [k] the heads that discover objects.
        grid_hw: the patch grid.

    Returns:
        [B, F, k, h, w] bool masks of each object in each frame.
    """
    prototypes = object_prototypes(cls_attention, queries, heads)
    normalised = F.normalize(tokens.float(), dim=-1)
    assignment = sinkhorn_knopp(
        normalised @ prototypes.float().transpose(1, 2), epsilon=epsilon, iterations=iterations
    )
    refined = refine_prototypes(assignment, normalised)
    frames = keys.shape[1]
    per_frame = [
        object_masks(tracking_maps(refined, keys[:, f].float()), grid_hw) for f in range(frames)
    ]
    return torch.stack(per_frame, dim=1)
