from __future__ import annotations

import pytest
import torch
from zerolabel.discovery import FUNCTIONS, ObjectMask
from zerolabel.discovery.lost import lost

from tests.unit.synthetic import block_mask, planted_keys


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 6)), 0, id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(0, 5)), 1, id="corner"),
        pytest.param((20, 15), (slice(9, 17), slice(4, 13)), 2, id="large-grid"),
    ],
)
def test_lost_finds_the_planted_block_exactly(grid_hw, block, seed):
    scene = planted_keys(grid_hw, [block], seed=seed)
    found = lost(scene.keys, grid_hw)
    assert len(found) == 1 and isinstance(found[0], ObjectMask)
    assert found[0].mask.dtype == torch.bool
    assert torch.equal(found[0].mask, block_mask(grid_hw, block))
    assert 0.0 <= found[0].score <= 1.0


def test_degree_counts_the_diagonal_and_sets_the_score():
    # Noise-free: object patches correlate positively with the patches of both objects only
    # (themselves included), background patches with the background only.
    grid_hw = (10, 10)
    scene = planted_keys(grid_hw, [(slice(1, 3), slice(1, 4)), (slice(6, 8), slice(5, 7))], noise=0)
    keys = torch.cat([scene.keys[:, :1], scene.keys[:, 1:].sum(dim=1, keepdim=True)], dim=1)
    object_patches = sum(int(m.sum()) for m in scene.objects)
    found = lost(keys, grid_hw)
    assert found[0].score == pytest.approx(1.0 - object_patches / 100)


def test_ties_go_to_the_lowest_patch_index():
    # Two identical, separate objects: every object patch has the same degree, so the seed is
    # the first object patch in row-major order and LOST returns the upper object.
    grid_hw = (10, 10)
    upper, lower = (slice(1, 3), slice(6, 9)), (slice(6, 8), slice(1, 4))
    scene = planted_keys(grid_hw, [upper, lower], noise=0)
    same_direction = torch.cat([scene.keys[:, :1], scene.keys[:, 1:].sum(1, keepdim=True)], 1)
    found = lost(same_direction, grid_hw)
    assert torch.equal(found[0].mask, block_mask(grid_hw, upper))
    flipped = same_direction.reshape(10, 10, 2).flip(0).reshape(100, 2)
    assert torch.equal(lost(flipped, grid_hw)[0].mask, block_mask(grid_hw, lower).flip(0))


def test_k_patches_limits_the_expansion_set():
    # With k = 1 only the seed votes: its own correlations decide the mask.
    scene = planted_keys((8, 8), [(slice(2, 6), slice(2, 6))], seed=3)
    wide = lost(scene.keys, (8, 8), k_patches=64)[0].mask
    seed_only = lost(scene.keys, (8, 8), k_patches=1)[0].mask
    affinity = scene.keys @ scene.keys.T
    degree = (affinity > 0).sum(1)
    seed = int(torch.argsort(degree, stable=True)[0])
    assert seed_only.flatten()[seed]
    assert torch.equal(seed_only.flatten() & ~(affinity[seed] > 0), torch.zeros(64, dtype=bool))
    assert torch.equal(wide, scene.objects[0])


def test_lost_is_invariant_to_the_scale_of_the_keys():
    scene = planted_keys((9, 7), [(slice(3, 7), slice(1, 4))], seed=4)
    assert torch.equal(lost(scene.keys * 37.0, (9, 7))[0].mask, lost(scene.keys, (9, 7))[0].mask)


def test_lost_returns_nothing_without_patches_or_support():
    assert lost(torch.zeros(0, 8), (0, 4)) == []
    assert lost(torch.zeros(12, 8), (3, 4)) == []


@pytest.mark.parametrize(
    ("keys", "grid_hw", "kwargs", "message"),
    [
        pytest.param(torch.zeros(12, 8), (3, 5), {}, "holds 15 patches", id="grid-mismatch"),
        pytest.param(torch.zeros(12), (3, 4), {}, r"\[N, D\]", id="not-2d"),
        pytest.param(torch.zeros(12, 8, dtype=torch.long), (3, 4), {}, "floating", id="int"),
        pytest.param(torch.zeros(12, 8), (3, 4), {"k_patches": 0}, "k_patches", id="k-zero"),
    ],
)
def test_lost_rejects_bad_input(keys, grid_hw, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lost(keys, grid_hw, **kwargs)


def test_lost_is_registered():
    assert FUNCTIONS["lost"] is lost


def test_featureless_keys_give_the_first_patch_with_score_zero_every_time():
    keys = torch.linspace(0.5, 1.0, 16).repeat(10 * 12, 1)  # every patch correlates with all
    runs = [lost(keys, (10, 12)) for _ in range(3)]
    assert all(len(found) == 1 and found[0].score == 0.0 for found in runs)
    assert all(torch.equal(found[0].mask, runs[0][0].mask) for found in runs)
    assert bool(runs[0][0].mask.all())
