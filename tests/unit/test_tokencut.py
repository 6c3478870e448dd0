from __future__ import annotations

import pytest
import torch
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.graph import (
    bipartition,
    dense_second_smallest_eigenvector,
    ncut_graph,
    second_smallest_eigenvector,
)
from zerolabel.discovery.tokencut import tokencut

from tests.unit.synthetic import block_mask, planted_keys


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 6)), 0, id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(11, 16)), 1, id="corner"),
        pytest.param((30, 40), (slice(10, 22), slice(5, 19)), 2, id="1200-patches"),
    ],
)
def test_tokencut_finds_the_planted_block_exactly(grid_hw, block, seed):
    scene = planted_keys(grid_hw, [block], seed=seed)
    found = tokencut(scene.keys, grid_hw)
    assert len(found) == 1
    assert torch.equal(found[0].mask, block_mask(grid_hw, block))


def test_tokencut_keeps_only_the_component_holding_the_seed():
    # Two separate blocks of the same direction land on the same side of the cut; only the
    # one holding the eigenvector's peak (the first patch on ties) is returned.
    grid_hw = (10, 12)
    upper, lower = (slice(1, 4), slice(1, 4)), (slice(6, 9), slice(7, 10))
    scene = planted_keys(grid_hw, [upper, lower], noise=0)
    keys = torch.cat([scene.keys[:, :1], scene.keys[:, 1:].sum(1, keepdim=True)], 1)
    keys = keys + 0.01 * torch.randn(keys.shape, generator=torch.Generator().manual_seed(0))
    v, _ = second_smallest_eigenvector(ncut_graph(keys, 0.2, 1e-5))
    foreground, seed = bipartition(v)
    both = block_mask(grid_hw, upper) | block_mask(grid_hw, lower)
    assert torch.equal(foreground.reshape(grid_hw), both)
    expected = upper if block_mask(grid_hw, upper).flatten()[seed] else lower
    assert torch.equal(tokencut(keys, grid_hw)[0].mask, block_mask(grid_hw, expected))


def test_tokencut_returns_the_smaller_side_even_when_it_is_the_background():
    # The planted "object" covers most of the grid: the smaller region carries the peak of the
    # eigenvector, so TokenCut (which has no corner rule) returns the background: the first
    # row and column.
    grid_hw = (10, 10)
    scene = planted_keys(grid_hw, [(slice(1, 10), slice(1, 10))], seed=3)
    mask = tokencut(scene.keys, grid_hw)[0].mask
    assert torch.equal(mask, ~scene.objects[0])


def test_score_is_one_minus_the_cut_eigenvalue():
    clean = planted_keys((9, 9), [(slice(2, 6), slice(2, 7))], seed=5)
    noisy = planted_keys((9, 9), [], noise=1.0, dim=8, seed=5)
    for scene in (clean, noisy):
        _, eigenvalue = dense_second_smallest_eigenvector(ncut_graph(scene.keys, 0.2, 1e-5))
        score = tokencut(scene.keys, scene.grid_hw)[0].score
        assert score == pytest.approx(min(max(1 - eigenvalue, 0.0), 1.0), abs=1e-9)
    assert tokencut(clean.keys, (9, 9))[0].score > tokencut(noisy.keys, (9, 9))[0].score


def test_tokencut_is_invariant_to_the_scale_of_each_key():
    scene = planted_keys((9, 7), [(slice(3, 7), slice(1, 4))], seed=4)
    scales = torch.rand(63, 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    assert torch.equal(
        tokencut(scene.keys * scales, (9, 7))[0].mask, tokencut(scene.keys, (9, 7))[0].mask
    )


def test_tokencut_returns_nothing_below_two_patches():
    assert tokencut(torch.zeros(0, 4), (0, 3)) == []
    assert tokencut(torch.ones(1, 4), (1, 1)) == []


def test_tokencut_rejects_bad_input():
    with pytest.raises(ValueError, match="holds 20 patches"):
        tokencut(torch.randn(12, 4), (4, 5))
    with pytest.raises(ValueError, match="eps"):
        tokencut(torch.randn(12, 4), (3, 4), eps=0.0)


def test_tokencut_is_registered():
    assert FUNCTIONS["tokencut"] is tokencut


@pytest.mark.parametrize("constant", [0.0, 1.0], ids=["zero-keys", "equal-keys"])
def test_featureless_keys_give_one_repeatable_zero_score_object(constant):
    keys = torch.full((20 * 20, 16), constant) + torch.linspace(0, 1, 16) * constant
    runs = [tokencut(keys, (20, 20)) for _ in range(3)]
    assert all(len(found) == 1 and found[0].score == 0.0 for found in runs)
    assert all(torch.equal(found[0].mask, runs[0][0].mask) for found in runs)
