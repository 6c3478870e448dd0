from __future__ import annotations

import pytest
import torch
from zerolabel import methods
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.dinoseg import dinoseg
from zerolabel.errors import ConfigError

from tests.unit.synthetic import block_mask

HEADS = 6


def planted_attention(
    grid_hw: tuple[int, int],
    objects: list[tuple[tuple[slice, slice], float]],
    *,
    head: int = 4,
    seed: int = 0,
) -> torch.Tensor:
    """[HEADS, N] attention: in ``head``, each block shares its given part of the mass evenly
    (with 0.1 % jitter), the rest spreads evenly over the other patches; other heads are noise."""
    n = grid_hw[0] * grid_hw[1]
    generator = torch.Generator().manual_seed(seed)
    attention = torch.rand(HEADS, n, generator=generator)
    row = torch.zeros(n, dtype=torch.float64)
    free = torch.ones(n, dtype=torch.bool)
    for block, share in objects:
        cells = block_mask(grid_hw, block).flatten()
        row[cells] = share / int(cells.sum())
        free &= ~cells
    row[free] = (1.0 - sum(share for _, share in objects)) / int(free.sum())
    jitter = 1 + 0.001 * torch.rand(n, generator=generator, dtype=torch.float64)
    attention[head] = (row * jitter).float()
    return attention


def keys_for(grid_hw: tuple[int, int]) -> torch.Tensor:
    return torch.randn(grid_hw[0] * grid_hw[1], 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("grid_hw", "block"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 7)), id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(12, 16)), id="corner"),
        pytest.param((30, 40), (slice(10, 20), slice(5, 19)), id="1200-patches"),
    ],
)
def test_dinoseg_finds_the_planted_block_exactly(grid_hw, block):
    # The block holds 60 % of the mass plus half a patch's share: without its last patch it
    # holds less than 60 %, so the smallest top set holding 60 % is the whole block, no more.
    area = int(block_mask(grid_hw, block).sum())
    attention = planted_attention(grid_hw, [(block, 0.6 * (1 + 0.5 / area))])
    found = dinoseg(keys_for(grid_hw), grid_hw, attention=attention)
    assert len(found) == 1
    assert torch.equal(found[0].mask, block_mask(grid_hw, block))


def test_dinoseg_reads_the_head_it_is_given():
    grid_hw, block = (10, 10), (slice(1, 4), slice(5, 9))
    attention = planted_attention(grid_hw, [(block, 0.62)], head=1)
    found = dinoseg(keys_for(grid_hw), grid_hw, attention=attention, head=1)
    assert torch.equal(found[0].mask, block_mask(grid_hw, block))
    other = dinoseg(keys_for(grid_hw), grid_hw, attention=attention)  # head 4: noise
    assert not other or not torch.equal(other[0].mask, block_mask(grid_hw, block))


def test_dinoseg_keeps_the_largest_component_of_the_attended_patches():
    grid_hw = (12, 12)
    small, large = (slice(1, 3), slice(1, 3)), (slice(6, 10), slice(5, 10))  # 4 and 20 patches
    attention = planted_attention(grid_hw, [(small, 0.1), (large, 0.5)])
    [found] = dinoseg(keys_for(grid_hw), grid_hw, attention=attention)
    assert torch.equal(found.mask, block_mask(grid_hw, large))
    share = attention[4].double() / attention[4].double().sum()
    expected = float(share[found.mask.flatten()].sum()) - 20 / 144
    assert found.score == pytest.approx(expected, abs=1e-9)


def test_a_larger_mass_keeps_more_patches():
    grid_hw, block = (10, 10), (slice(2, 6), slice(2, 6))
    attention = planted_attention(grid_hw, [(block, 0.62)])
    tight = dinoseg(keys_for(grid_hw), grid_hw, attention=attention, mass=0.3)[0].mask
    assert int(tight.sum()) < 16 and not bool((tight & ~block_mask(grid_hw, block)).any())
    loose = dinoseg(keys_for(grid_hw), grid_hw, attention=attention, mass=0.9)[0].mask
    assert bool((loose & block_mask(grid_hw, block)).sum() == 16) and int(loose.sum()) > 16


def test_scores_follow_how_concentrated_the_attention_is():
    grid_hw, block = (12, 12), (slice(3, 8), slice(3, 8))
    scores = [
        dinoseg(keys_for(grid_hw), grid_hw, attention=planted_attention(grid_hw, [(block, s)]))[
            0
        ].score
        for s in (0.62, 0.8, 0.95)
    ]
    assert scores == sorted(scores) and len(set(scores)) == 3
    assert all(0.0 < s <= 1.0 for s in scores)


@pytest.mark.parametrize("value", [0.0, 1.0], ids=["zero", "uniform"])
def test_featureless_attention_gives_no_object(value):
    attention = torch.full((HEADS, 64), value)
    assert dinoseg(keys_for((8, 8)), (8, 8), attention=attention) == []


def test_a_head_the_backbone_does_not_have_is_a_config_error_naming_the_range():
    attention = planted_attention((6, 6), [])
    with pytest.raises(
        ConfigError, match=r"head 6 does not exist: the backbone has 6 heads.*0\.\.5"
    ):
        dinoseg(keys_for((6, 6)), (6, 6), attention=attention, head=6)


def test_dinoseg_rejects_bad_input():
    keys = keys_for((4, 5))
    with pytest.raises(ValueError, match=r"attention must be \[heads, 20\]"):
        dinoseg(keys, (4, 5), attention=torch.rand(6, 21))
    with pytest.raises(ValueError, match="mass"):
        dinoseg(keys, (4, 5), attention=torch.rand(6, 20), mass=0.0)
    with pytest.raises(ValueError, match="holds 20 patches"):
        dinoseg(keys[:12], (4, 5), attention=torch.rand(6, 20))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dinoseg_gives_the_same_object_for_other_dtypes(dtype):
    grid_hw, block = (10, 12), (slice(2, 6), slice(3, 9))
    attention = planted_attention(grid_hw, [(block, 0.62)])
    [found] = dinoseg(keys_for(grid_hw).to(dtype), grid_hw, attention=attention.to(dtype))
    assert found.mask.dtype == torch.bool and found.mask.device == torch.device("cpu")
    assert torch.equal(found.mask, block_mask(grid_hw, block))


def test_dinoseg_is_registered_with_the_attention_as_input():
    assert FUNCTIONS["dinoseg"] is dinoseg
    info = methods.get("dinoseg")
    assert info.inputs == frozenset({"attention"}) and info.defaults() == {"head": 4, "mass": 0.6}
    assert info.default_max_side == 1024
