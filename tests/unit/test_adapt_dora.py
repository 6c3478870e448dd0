"""DoRA's discover-and-track on synthetic attention, tokens and keys whose answer is known."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from zerolabel.adapt.dora import (
    masked_views,
    object_masks,
    object_prototypes,
    refine_prototypes,
    sinkhorn_knopp,
    track,
    tracking_maps,
)

GRID = (6, 6)
N = GRID[0] * GRID[1]


def _block(top: int, left: int, size: int = 2) -> torch.Tensor:
    """Patch indices (row-major) of a square block on the grid."""
    rows = torch.arange(top, top + size)
    cols = torch.arange(left, left + size)
    return (rows[:, None] * GRID[1] + cols[None, :]).flatten()


def _mask(indices: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(N, dtype=torch.bool)
    mask[indices] = True
    return mask.reshape(GRID)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sinkhorn_knopp_is_doubly_stochastic(seed):
    scores = torch.randn(3, N, 4, generator=torch.Generator().manual_seed(seed)) * 0.2
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=30)
    assert torch.allclose(q.sum(dim=2), torch.ones(3, N), atol=1e-5)  # every patch gives 1
    assert torch.allclose(q.sum(dim=1), torch.full((3, 4), N / 4), rtol=1e-2)  # N/k each
    assert (q >= 0).all()


def test_sinkhorn_knopp_spreads_patches_that_all_prefer_one_object():
    scores = torch.zeros(1, N, 2)
    scores[0, :, 0] = 1.0  # every patch is closer to object 0...
    scores[0, : N // 2, 0] = 1.01  # ...half of them slightly more
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=30)
    assert q.argmax(dim=2)[0, : N // 2].eq(0).all() and q.argmax(dim=2)[0, N // 2 :].eq(1).all()


def test_sinkhorn_knopp_stays_finite_on_large_scores():
    q = sinkhorn_knopp(torch.full((1, N, 3), 1e4), epsilon=0.05)
    assert torch.isfinite(q).all()


def test_a_prototype_is_the_query_its_head_attends_to():
    queries = torch.randn(1, N, 8)
    attention = torch.zeros(1, 3, N)
    attention[0, 0, 5] = 1.0  # head 0 looks at patch 5
    attention[0, 2, 7] = 0.5  # head 2 at patches 7 and 9, half each
    attention[0, 2, 9] = 0.5
    prototypes = object_prototypes(attention, queries, torch.tensor([2, 0]))
    assert torch.allclose(prototypes[0, 0], (queries[0, 7] + queries[0, 9]) / 2)
    assert torch.allclose(prototypes[0, 1], queries[0, 5])


def test_refined_prototypes_are_weighted_sums_of_tokens():
    tokens = torch.eye(4)[None]  # 4 patches, one-hot tokens
    assignment = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    refined = refine_prototypes(assignment, tokens)
    assert torch.equal(refined, torch.tensor([[[1.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]]]))


def test_a_tracking_map_peaks_where_the_keys_match_the_prototype():
    keys = torch.zeros(1, N, 4)
    keys[..., 3] = 1.0  # background direction
    object_patches = _block(3, 1)
    keys[0, object_patches] = torch.tensor([4.0, 0.0, 0.0, 0.0])
    prototype = torch.tensor([[[4.0, 0.0, 0.0, 0.0]]])
    maps = tracking_maps(prototype, keys)
    assert torch.allclose(maps.sum(dim=-1), torch.ones(1, 1))
    masks = object_masks(maps, GRID)
    assert torch.equal(masks[0, 0], _mask(object_patches))


def test_objects_found_in_the_first_frame_are_tracked_as_they_move():
    """Three objects (tokens and keys along e0, e1, e2) found by three heads at frame 0 are
    followed through two more frames where they lie elsewhere. Sinkhorn-Knopp gives every
    object the same share of the patches, so the objects cover the frame in equal parts:
    rows at frame 0, columns at frame 1, rows in another order at frame 2."""
    rows = [[0, 1], [2, 3], [4, 5]]
    places = [  # patches of each object, per frame
        [_stripe(rows[o], horizontal=True) for o in range(3)],
        [_stripe(rows[o], horizontal=False) for o in range(3)],
        [_stripe(rows[2 - o], horizontal=True) for o in range(3)],
    ]
    keys = torch.zeros(1, len(places), N, 3)
    for f, frame in enumerate(places):
        for obj, patches in enumerate(frame):
            keys[0, f, patches] = 2.0 * F.one_hot(torch.tensor(obj), 3).float()
    first = keys[:, 0]
    attention = torch.zeros(1, 5, N)
    for head, obj in ((4, 0), (1, 1), (2, 2)):  # three of five heads, each on one object
        attention[0, head, places[0][obj][:3]] = 1 / 3
    masks = track(attention, first, first, keys, torch.tensor([4, 1, 2]), GRID)
    assert masks.shape == (1, 3, 3, *GRID)
    for f, frame in enumerate(places):
        for obj, patches in enumerate(frame):
            assert torch.equal(masks[0, f, obj], _mask(patches)), (f, obj)


def _stripe(lines: list[int], *, horizontal: bool) -> torch.Tensor:
    grid = torch.arange(N).reshape(GRID)
    return (grid[lines] if horizontal else grid[:, lines]).flatten()


def test_masked_views_keep_only_each_objects_pixels():
    images = torch.randn(2, 3, 12, 12)
    masks = torch.zeros(2, 2, 3, 3, dtype=torch.bool)
    masks[0, 0, 0, 0] = True
    masks[1, 1, 2, 1:] = True
    views = masked_views(images, masks)
    assert views.shape == (2, 2, 3, 12, 12)
    assert torch.equal(views[0, 0, :, :4, :4], images[0, :, :4, :4])
    assert views[0, 0].abs().sum() == images[0, :, :4, :4].abs().sum()
    assert torch.equal(views[1, 1, :, 8:, 4:], images[1, :, 8:, 4:])
    assert views[0, 1].abs().sum() == 0 and views[1, 0].abs().sum() == 0
