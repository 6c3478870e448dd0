"""FOUND on synthetic keys and attention: background seed, head weights, the optional head."""

from __future__ import annotations

import math

import pytest
import torch
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.found import (
    background_similarity,
    coarse_object_mask,
    found,
    head_weights,
)

from tests.unit.synthetic import block_mask, planted_keys

HEADS = 4


def planted_attention(
    objects: list[torch.Tensor], grid_hw: tuple[int, int], *, seed: int = 0
) -> torch.Tensor:
    """[HEADS, N]: every head attends more to the object patches (head k by 1 + k times),
    with a little seeded noise; each head's row sums below 1 like a CLS softmax row."""
    generator = torch.Generator().manual_seed(seed)
    n = grid_hw[0] * grid_hw[1]
    on_object = torch.zeros(n)
    for mask in objects:
        on_object[mask.flatten()] = 1.0
    rows = [
        1.0 + (1 + k) * 4.0 * on_object + 0.05 * torch.rand(n, generator=generator)
        for k in range(HEADS)
    ]
    attention = torch.stack(rows)
    return 0.9 * attention / attention.sum(dim=1, keepdim=True)


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 6)), 0, id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(11, 16)), 1, id="corner"),
        pytest.param((30, 40), (slice(10, 22), slice(5, 19)), 2, id="1200-patches"),
    ],
)
def test_found_finds_the_planted_block_exactly(grid_hw, block, seed):
    scene = planted_keys(grid_hw, [block], seed=seed)
    attention = planted_attention(scene.objects, grid_hw, seed=seed)
    [obj] = found(scene.keys, grid_hw, attention=attention)
    assert torch.equal(obj.mask, block_mask(grid_hw, block))
    assert 0.0 < obj.score <= 1.0


def test_head_weights_follow_the_sparsity_formula_with_one_mean_for_all_heads():
    attention = torch.tensor(
        [
            [0.05, 0.05, 0.05, 0.05, 0.05, 0.05],  # nowhere above the global mean 1/12
            [0.0, 0.0, 0.0, 0.0, 0.3, 0.3],  # 2 of 6 above
            [0.2, 0.2, 0.2, 0.0, 0.0, 0.0],  # 3 of 6 above
        ]
    )
    q = [1e-10, 2 / 6 + 1e-10, 3 / 6 + 1e-10]
    expected = torch.tensor([math.log(sum(q) / qi) for qi in q])
    assert torch.allclose(head_weights(attention), expected, rtol=1e-6)


def test_the_seed_is_the_least_attended_patch_and_always_background():
    grid_hw = (6, 6)
    scene = planted_keys(grid_hw, [(slice(1, 4), slice(1, 4))], seed=3)
    attention = planted_attention(scene.objects, grid_hw, seed=3)
    attention[:, 35] = 0.0  # the bottom-right patch is the least attended in every head
    similarity, seed = background_similarity(scene.keys, attention)
    assert seed == 35 and similarity[seed] == pytest.approx(1.0)
    assert not coarse_object_mask(scene.keys, grid_hw, attention, tau=1.0).flatten()[seed]


def test_heads_weigh_the_keys_before_the_cosine():
    # Object and background differ only inside head 1's block of the keys; a head weighed
    # zero there (it attends to as many patches as the others together) hides the object.
    grid_hw, dim = (6, 6), 16
    keys = torch.zeros(36, dim)
    keys[:, 0] = 1.0  # head 0: the same for every patch
    object_cells = block_mask(grid_hw, (slice(2, 4), slice(2, 4))).flatten()
    keys[object_cells, 4] = 3.0  # head 1 tells the object apart
    keys[~object_cells, 5] = 3.0
    attention = torch.full((HEADS, 36), 0.02)
    attention[:, object_cells] = 0.05
    [obj] = found(keys, grid_hw, attention=attention)
    assert torch.equal(obj.mask.flatten(), object_cells)
    attention[1] = 0.0
    attention[1, :35] = 0.5  # head 1 now above the mean nearly everywhere: weight ~0
    assert head_weights(attention)[1] < 1e-6 < head_weights(attention)[0]
    assert found(keys, grid_hw, attention=attention) == []  # every weighted key alike


def test_scores_are_ordered_by_the_planted_contrast():
    grid_hw, block = (10, 10), (slice(3, 7), slice(2, 6))
    scores = []
    for away in (0.0, 0.5, 2.0):
        scene = planted_keys(grid_hw, [block], away_from_background=away, seed=4)
        attention = planted_attention(scene.objects, grid_hw, seed=4)
        [obj] = found(scene.keys, grid_hw, attention=attention)
        assert torch.equal(obj.mask, scene.objects[0])
        scores.append(obj.score)
    assert scores == sorted(scores) and scores[0] < scores[-1]


def test_the_largest_component_of_the_object_mask_is_returned():
    grid_hw = (10, 12)
    small, large = (slice(1, 3), slice(1, 3)), (slice(5, 9), slice(6, 11))
    scene = planted_keys(grid_hw, [small, large], seed=5)
    attention = planted_attention(scene.objects, grid_hw, seed=5)
    assert torch.equal(
        coarse_object_mask(scene.keys, grid_hw, attention),
        block_mask(grid_hw, small) | block_mask(grid_hw, large),
    )
    [obj] = found(scene.keys, grid_hw, attention=attention)
    assert torch.equal(obj.mask, block_mask(grid_hw, large))


@pytest.mark.parametrize("constant", [0.0, 1.0], ids=["zero-keys", "equal-keys"])
def test_featureless_keys_give_nothing(constant):
    keys = torch.full((64, 16), constant)
    attention = torch.full((HEADS, 64), 0.9 / 64)
    assert found(keys, (8, 8), attention=attention) == []


def test_the_head_replaces_the_coarse_mask_and_scores_by_probability_contrast():
    grid_hw, block = (9, 9), (slice(2, 6), slice(3, 7))
    scene = planted_keys(grid_hw, [block], seed=6)
    uniform = torch.full((HEADS, 81), 0.01)  # attention that alone finds nothing useful
    weight = torch.zeros(32)
    weight[1] = 10.0  # the planted object's direction
    scores = []
    for bias in (-2.0, -5.0):
        [obj] = found(
            scene.keys,
            grid_hw,
            attention=uniform,
            head_weight=weight,
            head_bias=torch.tensor([bias]),
        )
        assert torch.equal(obj.mask, block_mask(grid_hw, block))
        scores.append(obj.score)
    assert scores[0] < scores[1]  # a sharper head separates the probabilities more
    everything = found(
        scene.keys, grid_hw, attention=uniform, head_weight=weight, head_bias=torch.tensor([50.0])
    )
    assert everything == []  # the whole grid is "object": no contrast


def test_bad_input_is_refused_naming_the_cause():
    keys = torch.randn(12, 8)
    with pytest.raises(ValueError, match=r"attention must be \[heads, 12\]"):
        found(keys, (3, 4), attention=torch.rand(4, 10))
    with pytest.raises(ValueError, match="both head_weight and head_bias"):
        found(keys, (3, 4), attention=torch.rand(4, 12), head_weight=torch.zeros(8))
    with pytest.raises(ValueError, match="takes 16-d keys, these are 8-d: train it again"):
        found(
            keys,
            (3, 4),
            attention=torch.rand(4, 12),
            head_weight=torch.zeros(16),
            head_bias=torch.zeros(1),
        )
    with pytest.raises(ValueError, match="do not split into 3 heads"):
        found(keys, (3, 4), attention=torch.rand(3, 12))


def test_found_is_registered():
    assert FUNCTIONS["found"] is found
