from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from zerolabel import methods
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.components import largest_component
from zerolabel.discovery.dss import EDGE_FLOOR, dss
from zerolabel.discovery.graph import dense_second_smallest_eigenvector

from tests.unit.synthetic import block_mask, planted_keys


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 6)), 0, id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(11, 16)), 1, id="corner"),
        pytest.param((30, 40), (slice(10, 22), slice(5, 19)), 2, id="1200-patches"),
    ],
)
def test_dss_finds_the_planted_block_exactly(grid_hw, block, seed):
    scene = planted_keys(grid_hw, [block], seed=seed)
    found = dss(scene.keys, grid_hw)
    assert len(found) == 1
    assert torch.equal(found[0].mask, block_mask(grid_hw, block))


def test_the_larger_side_is_flipped_to_the_smaller_one():
    # The planted "object" covers 81 % of the grid: the smaller side, the L-shaped first row
    # and column, is what DSS returns, whatever the eigenvector's sign.
    scene = planted_keys((10, 10), [(slice(1, 10), slice(1, 10))], seed=3)
    [found] = dss(scene.keys, (10, 10))
    assert torch.equal(found.mask, ~scene.objects[0])


def test_dss_keeps_the_largest_component_of_the_foreground():
    # Two blocks of one direction fall on the same side of the cut; the larger is returned.
    grid_hw = (12, 12)
    small, large = (slice(1, 3), slice(1, 3)), (slice(6, 10), slice(5, 10))
    scene = planted_keys(grid_hw, [small, large], noise=0)
    keys = torch.cat([scene.keys[:, :1], scene.keys[:, 1:].sum(1, keepdim=True)], 1)
    keys = keys + 0.01 * torch.randn(keys.shape, generator=torch.Generator().manual_seed(0))
    [found] = dss(keys, grid_hw)
    assert torch.equal(found.mask, block_mask(grid_hw, large))


def test_score_is_one_minus_the_eigenvalue_of_the_relu_graph():
    clean = planted_keys((9, 9), [(slice(2, 6), slice(2, 7))], seed=5)
    blurred = planted_keys((9, 9), [(slice(2, 6), slice(2, 7))], noise=0.6, seed=5)
    scores = []
    for scene in (clean, blurred):
        unit = F.normalize(scene.keys, dim=1)
        _, eigenvalue = dense_second_smallest_eigenvector((unit @ unit.T).clamp(min=EDGE_FLOOR))
        [found] = dss(scene.keys, scene.grid_hw)
        assert found.score == pytest.approx(1 - eigenvalue, abs=1e-9)
        scores.append(found.score)
    assert scores[0] > scores[1]


def test_dss_is_invariant_to_the_scale_of_each_key():
    scene = planted_keys((9, 7), [(slice(3, 7), slice(1, 4))], seed=4)
    scales = torch.rand(63, 1, generator=torch.Generator().manual_seed(1)) * 10 + 0.1
    assert torch.equal(dss(scene.keys * scales, (9, 7))[0].mask, dss(scene.keys, (9, 7))[0].mask)


@pytest.mark.parametrize("constant", [0.0, 1.0], ids=["zero-keys", "equal-keys"])
def test_featureless_keys_give_no_object(constant):
    keys = torch.full((20 * 20, 16), constant) + torch.linspace(0, 1, 16) * constant
    assert dss(keys, (20, 20)) == []


def test_dss_returns_nothing_below_two_patches_and_rejects_bad_input():
    assert dss(torch.zeros(0, 4), (0, 3)) == []
    assert dss(torch.ones(1, 4), (1, 1)) == []
    with pytest.raises(ValueError, match="holds 20 patches"):
        dss(torch.randn(12, 4), (4, 5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dss_gives_the_same_object_for_other_dtypes(dtype):
    scene = planted_keys((10, 12), [(slice(2, 6), slice(3, 9))], seed=6)
    [found] = dss(scene.keys.to(dtype), (10, 12))
    assert found.mask.dtype == torch.bool and found.mask.device == torch.device("cpu")
    assert torch.equal(found.mask, scene.objects[0])


def test_dss_is_registered():
    assert FUNCTIONS["dss"] is dss
    assert methods.get("dss").params == () and methods.get("dss").default_max_side == 1024


def test_dss_keeps_diagonal_neighbours_in_its_component_as_the_authors_do():
    # One object of two blocks that touch at a corner only: 8-connected (skimage's default,
    # the authors' rule) it is one component; 4-connected it would be the larger block alone.
    grid_hw = (12, 12)
    upper, lower = (slice(2, 6), slice(2, 6)), (slice(6, 9), slice(6, 9))
    planted = block_mask(grid_hw, upper) | block_mask(grid_hw, lower)
    scene = planted_keys(grid_hw, [planted], seed=7)
    [found] = dss(scene.keys, grid_hw)
    assert torch.equal(found.mask, planted)
    assert torch.equal(largest_component(found.mask), block_mask(grid_hw, upper))
