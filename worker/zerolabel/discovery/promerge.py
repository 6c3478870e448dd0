"""ProMerge (Li & Shin, ECCV 2024): several objects from seed prompts, filtered and merged.

No eigensolver: each seed of a regular grid of patches prompts the mask of the patches similar
to it; masks that spread over the image's sides vote for the background; the other masks are
split into connected proposals, filtered against the background, and merged by overlap and
feature similarity. The dense CRF of the authors' last step is not part of this module (the
pipeline refines masks); the steps keep the paper's order:

1. Seeds every ``stride`` patches from the top-left patch; the mask of seed ``s`` is
   ``cos(f_s, f_q) > tau`` over all patches ``q``: one row of the cosine affinity, all seeds in
   one matrix product.
2. A seed mask is a background candidate when more than one side of the grid is in it (a side
   counts when more than half of its cells are: the authors round the fraction, and 0.5 rounds
   to 0). Background: the cells that more than half of the candidates hold. No candidate, or a
   background under ``min_background_frac`` of the grid: no objects.
3. Proposals: each 4-connected component (``scipy.ndimage.label``'s default, as the authors
   split) of a non-candidate seed's mask whose area is at least ``min_component_ratio`` times
   the area of the component holding the seed.
4. Cascade filter, proposals by ascending area: a proposal is kept when, of its cells no kept
   proposal covers yet, fewer than ``max_background_overlap`` lie in the background (one with
   no new cell is a repeat and dropped), and the dot product of its mean L2-normalised key
   with the background's is below ``max_background_similarity``.
5. Merge, kept proposals by descending area: a proposal joins every group it overlaps by more
   than ``merge_overlap`` of its own area, or by more than ``merge_min_overlap`` when the dot
   product of the two mean normalised keys is at least ``merge_similarity``; the groups it
   joins become one. Each group is one object.

The background test of step 4 applies to single proposals only, as the authors apply it: a
merged group is kept whatever its own mean key (the union of two kept proposals can lean
towards the background more than either does), and its score comes from its proposals.

Ties of area keep the order of the seeds (row-major) and of the components within a seed
(row-major order of their first cell). Steps 1, 2 and the feature statistics of step 4 run on
the keys' device; components are labelled on the CPU in one pass for all seeds, and the
inherently sequential filter and merge loop over proposals there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zerolabel.discovery.components import label_stack
from zerolabel.discovery.graph import validate_keys
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked


@dataclass(frozen=True, eq=False)  # identity equality: tensors have no single truth value
class _Group:
    """A merged object: its cells, the mean of their normalised keys (CPU) and the proposals
    merged into it (their positions in the list :func:`merge` was given)."""

    cells: torch.Tensor  # [N] bool
    mean: torch.Tensor  # [D]
    members: tuple[int, ...] = ()


@checked("promerge")
def promerge(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    stride: int = 4,
    tau: float = 0.2,
    min_background_frac: float = 0.1,
    min_component_ratio: float = 0.5,
    max_background_overlap: float = 0.8,
    max_background_similarity: float = 0.1,
    merge_overlap: float = 0.5,
    merge_min_overlap: float = 0.1,
    merge_similarity: float = 0.1,
    max_objects: int = 20,
) -> list[ObjectMask]:
    """Objects as ProMerge finds them on the patch grid (see the module for the steps).

    Score per object: ``contrast * (1 - background overlap)``, in (0, 1], where ``contrast``
    is the largest ``(max_background_similarity - m . b) / (1 + max_background_similarity)``
    over the proposals merged into the object (``m``, ``b``: mean normalised key of a proposal
    and of the background; 0 at the filter's limit, 1 for a proposal pointing against the
    background; every kept proposal is below the limit) and ``background overlap`` is the
    fraction of the object's cells inside the voted background (below 1: every kept proposal
    has a cell outside it). An object is the proposal itself when nothing merged into it.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        stride: distance between seeds along rows and columns, in patches.
        tau: cosine similarity above which a patch is in a seed's mask.
        min_background_frac: smallest background, as a fraction of the grid, to look for objects.
        min_component_ratio: smallest proposal, relative to the seed's own component.
        max_background_overlap: a proposal whose new cells lie in the background at this
            fraction or more is dropped.
        max_background_similarity: a proposal whose mean key has this dot product with the
            background's or more is dropped, in (-1, 1].
        merge_overlap: overlap (of the proposal's area) above which it joins a group.
        merge_min_overlap: smallest overlap at which similar keys also join.
        merge_similarity: dot product of mean keys from which an overlap joins.
        max_objects: how many objects are kept, the best scored (the authors keep every one;
            on an image of many small look-alike regions that can be hundreds, each then
            refined to pixels).

    Returns:
        At most ``max_objects`` objects by descending score, each an [h, w] bool mask on
        ``keys``' device (they may overlap); [] when no background or no proposal is found.
    """
    validate_keys(keys, grid_hw)
    if keys.shape[0] == 0:
        return []
    unit = F.normalize(keys.detach().float(), p=2, dim=1)
    seeds = seed_indices(grid_hw, stride, unit.device)
    seed_masks = (unit[seeds] @ unit.T > tau).reshape(-1, *grid_hw)  # step 1: [S, h, w]
    candidates = sides_in_mask(seed_masks) > 1
    background = background_vote(seed_masks[candidates], min_background_frac)
    if background is None:
        return []
    proposals = split_proposals(
        seed_masks[~candidates], seeds[~candidates], grid_hw, min_component_ratio
    )
    if proposals.shape[0] == 0:
        return []
    cells = proposals.to(unit.device).float()
    means = (cells @ unit) / cells.sum(dim=1, keepdim=True)  # [P, D] mean normalised keys
    background_mean = unit[background.flatten()].mean(dim=0)
    similarity = (means @ background_mean).cpu()
    background_cpu = background.flatten().cpu()
    kept = cascade_filter(
        proposals,
        similarity,
        background_cpu,
        max_overlap=max_background_overlap,
        max_similarity=max_background_similarity,
    )
    groups = merge(
        [(proposals[i], means[i].cpu()) for i in kept],
        unit.cpu(),
        overlap=merge_overlap,
        min_overlap=merge_min_overlap,
        similarity=merge_similarity,
    )
    contrasts = (max_background_similarity - similarity[kept]) / (1.0 + max_background_similarity)
    objects = []
    for group in groups:
        contrast = float(contrasts[list(group.members)].max().clamp(0.0, 1.0))
        inside = float((group.cells & background_cpu).sum()) / float(group.cells.sum())
        score = contrast * (1.0 - inside)
        objects.append(ObjectMask(group.cells.reshape(grid_hw).to(keys.device), score))
    return sorted(objects, key=lambda o: -o.score)[:max_objects]


def seed_indices(grid_hw: tuple[int, int], stride: int, device: torch.device) -> torch.Tensor:
    """Row-major patch indices of the seeds: rows and columns 0, stride, 2 * stride, ...

    Returns:
        [S] int64 on ``device``.
    """
    h, w = grid_hw
    rows = torch.arange(0, h, stride, device=device)
    cols = torch.arange(0, w, stride, device=device)
    return (rows[:, None] * w + cols[None, :]).flatten()


def sides_in_mask(masks: torch.Tensor) -> torch.Tensor:
    """How many of the four grid sides each mask holds (more than half of the side's cells).

    Args:
        masks: [S, h, w] bool.

    Returns:
        [S] int64.
    """
    sides = (masks[:, 0, :], masks[:, -1, :], masks[:, :, 0], masks[:, :, -1])
    return torch.stack([side.float().mean(dim=1) > 0.5 for side in sides]).sum(dim=0)


def background_vote(candidates: torch.Tensor, min_frac: float) -> torch.Tensor | None:
    """Cells that more than half of the background candidates hold.

    Args:
        candidates: [C, h, w] bool masks of the background candidates.
        min_frac: smallest background worth looking for objects against.

    Returns:
        [h, w] bool, or None when there is no candidate or the background is smaller than
        ``min_frac`` of the grid.
    """
    if candidates.shape[0] == 0:
        return None
    background = candidates.float().mean(dim=0) > 0.5
    if float(background.float().mean()) < min_frac:
        return None
    return background


def split_proposals(
    masks: torch.Tensor, seeds: torch.Tensor, grid_hw: tuple[int, int], min_ratio: float
) -> torch.Tensor:
    """Each mask's connected components at least ``min_ratio`` times its seed's component.

    Args:
        masks: [S, h, w] bool seed masks.
        seeds: [S] patch index of each mask's seed.
        grid_hw: (h, w) of the grid.
        min_ratio: smallest component area relative to the seed's component.

    Returns:
        [P, h * w] bool proposals on the CPU, in seed order, then component order; a seed
        outside its own mask (an all-zero key) gives none.
    """
    if masks.shape[0] == 0:
        return torch.zeros(0, grid_hw[0] * grid_hw[1], dtype=torch.bool)
    labels, areas = label_stack(masks)
    flat = labels.reshape(labels.shape[0], -1)
    seed_label = flat.gather(1, seeds.cpu()[:, None])[:, 0]  # [S], 0: seed outside its mask
    owner = torch.zeros_like(areas)
    owner[flat.flatten()] = torch.arange(flat.shape[0]).repeat_interleave(flat.shape[1])
    base = areas[seed_label[owner]]
    wanted = (seed_label[owner] > 0) & (areas >= min_ratio * base)
    wanted[0] = False  # label 0: cells outside every component
    chosen = torch.nonzero(wanted)[:, 0]
    return flat[owner[chosen]] == chosen[:, None]


def cascade_filter(
    proposals: torch.Tensor,
    similarity: torch.Tensor,
    background: torch.Tensor,
    *,
    max_overlap: float,
    max_similarity: float,
) -> list[int]:
    """Indices of the proposals kept by step 4, in ascending order of area.

    Args:
        proposals: [P, N] bool.
        similarity: [P] dot product of each proposal's mean key with the background's.
        background: [N] bool.
        max_overlap: keep when the background holds less than this of the new cells.
        max_similarity: keep when ``similarity`` is below this.
    """
    areas = proposals.sum(dim=1)
    covered = torch.zeros_like(background)
    kept = []
    for index in torch.argsort(areas, stable=True).tolist():
        new = proposals[index] & ~covered
        fresh = int(new.sum())
        if fresh == 0 or float(similarity[index]) >= max_similarity:
            continue
        if int((new & background).sum()) / fresh < max_overlap:
            kept.append(index)
            covered |= proposals[index]
    return kept


def merge(
    masks: list[tuple[torch.Tensor, torch.Tensor]],
    unit: torch.Tensor,
    *,
    overlap: float,
    min_overlap: float,
    similarity: float,
) -> list[_Group]:
    """Step 5: group the kept proposals, largest first.

    Args:
        masks: (cells [N] bool, mean normalised key [D]) of each kept proposal.
        unit: [N, D] L2-normalised keys, on the CPU like the masks.
        overlap: share of a proposal's area above which it joins a group.
        min_overlap: share above which it joins a group of similar mean key.
        similarity: dot product of mean keys from which ``min_overlap`` suffices.

    Returns:
        The groups, in order of creation, each with the positions in ``masks`` of the
        proposals it holds.
    """
    # Groups as rows of two matrices, so each proposal meets every group in one product.
    n, d = unit.shape
    cells_of = torch.zeros((0, n), dtype=torch.float32)
    means_of = torch.zeros((0, d), dtype=unit.dtype)
    members_of: list[tuple[int, ...]] = []
    for index, (cells, mean) in sorted(enumerate(masks), key=lambda m: -int(m[1][0].sum())):
        area = float(cells.sum())
        shared = (cells_of @ cells.to(torch.float32)) / area
        similar = means_of @ mean
        joined = (shared > overlap) | ((shared > min_overlap) & (similar >= similarity))
        if not bool(joined.any()):
            cells_of = torch.cat([cells_of, cells.to(torch.float32)[None]])
            means_of = torch.cat([means_of, mean[None]])
            members_of.append((index,))
            continue
        union = cells | cells_of[joined].bool().any(dim=0)
        flags = joined.tolist()
        members = [index]
        for held, join in zip(members_of, flags, strict=True):
            if join:
                members.extend(held)
        kept = ~joined
        cells_of = torch.cat([cells_of[kept], union.to(torch.float32)[None]])
        means_of = torch.cat([means_of[kept], unit[union].mean(dim=0)[None]])
        members_of = [held for held, join in zip(members_of, flags, strict=True) if not join]
        members_of.append(tuple(sorted(members)))
    groups = [
        _Group(row.bool(), mean, members)
        for row, mean, members in zip(cells_of, means_of, members_of, strict=True)
    ]
    return groups
