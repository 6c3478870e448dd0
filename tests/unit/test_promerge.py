from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from zerolabel import methods
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.promerge import (
    background_vote,
    cascade_filter,
    merge,
    promerge,
    seed_indices,
    sides_in_mask,
    split_proposals,
)

from tests.unit.synthetic import block_mask, leaning_scene, planted_keys

SCENES = [
    pytest.param((12, 14), [(slice(1, 5), slice(1, 5))], id="one"),
    pytest.param((12, 14), [(slice(1, 5), slice(1, 5)), (slice(7, 10), slice(8, 12))], id="two"),
    pytest.param(
        (24, 20),
        [(slice(3, 9), slice(4, 16)), (slice(14, 21), slice(2, 7)), (slice(13, 19), slice(11, 17))],
        id="three",
    ),
    pytest.param(
        (60, 60), [(slice(5, 25), slice(8, 30)), (slice(35, 50), slice(30, 52))], id="60x60"
    ),
]


def as_sets(masks: list[torch.Tensor]) -> set[bytes]:
    return {m.numpy().tobytes() for m in masks}


@pytest.mark.parametrize(("grid_hw", "blocks"), SCENES)
def test_promerge_finds_every_planted_object_exactly(grid_hw, blocks):
    scene = planted_keys(grid_hw, blocks, seed=2)
    found = promerge(scene.keys, grid_hw)
    assert len(found) == len(blocks)
    assert as_sets([o.mask for o in found]) == as_sets(scene.objects)
    assert [o.score for o in found] == sorted((o.score for o in found), reverse=True)


def test_max_objects_keeps_the_best_scored_objects():
    grid_hw, blocks = (24, 20), SCENES[2].values[1]
    scene = planted_keys(grid_hw, blocks, seed=2)
    every = promerge(scene.keys, grid_hw)
    best = promerge(scene.keys, grid_hw, max_objects=2)
    assert len(every) == 3
    assert [o.score for o in best] == [o.score for o in every[:2]]
    assert as_sets([o.mask for o in best]) == as_sets([o.mask for o in every[:2]])


def contrast_scene(aways: list[float]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Background along e0; object k along e_{k+1} - aways[k] * e0 (more away: more contrast)."""
    grid_hw = (16, 16)
    blocks = [(slice(2, 6), slice(2, 6)), (slice(9, 13), slice(2, 6)), (slice(5, 9), slice(9, 13))]
    keys = torch.zeros(256, 8)
    keys[:, 0] = 1.0
    masks = []
    for k, away in enumerate(aways):
        mask = block_mask(grid_hw, blocks[k])
        keys[mask.flatten()] = torch.eye(8)[k + 1] - away * torch.eye(8)[0]
        masks.append(mask)
    keys += 0.03 * torch.randn(keys.shape, generator=torch.Generator().manual_seed(0))
    return keys, masks


def test_scores_follow_the_planted_contrast_with_the_background():
    keys, masks = contrast_scene([0.1, 0.6, 0.35])
    found = promerge(keys, (16, 16))
    by_mask = {o.mask.numpy().tobytes(): o.score for o in found}
    scores = [by_mask[m.numpy().tobytes()] for m in masks]
    assert scores[0] < scores[2] < scores[1]
    # The definition: (0.1 - m . b) / 1.1 with m, b the mean normalised keys, no overlap.
    unit = F.normalize(keys, dim=1)
    background = unit[~torch.stack(masks).any(0).flatten()].mean(0)
    expected = [(0.1 - float(unit[m.flatten()].mean(0) @ background)) / 1.1 for m in masks]
    assert scores == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "keys",
    [torch.zeros(100, 8), torch.ones(100, 8), torch.linspace(0, 1, 8).repeat(100, 1)],
    ids=["zero", "ones", "equal"],
)
def test_featureless_keys_give_no_object(keys):
    assert promerge(keys, (10, 10)) == []


def test_without_a_background_there_are_no_objects():
    # Unrelated keys: every seed's mask is the seed alone, no mask spans two sides.
    keys = torch.eye(64)
    assert promerge(keys, (8, 8)) == []
    # One object leaves 90 % of the grid to the background: enough unless more is asked for.
    scene = planted_keys((12, 14), [(slice(2, 6), slice(2, 6))])
    assert len(promerge(scene.keys, (12, 14), min_background_frac=0.9)) == 1
    assert promerge(scene.keys, (12, 14), min_background_frac=0.95) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_promerge_gives_the_same_objects_for_other_dtypes(dtype):
    scene = planted_keys((12, 14), [(slice(1, 5), slice(1, 5)), (slice(7, 10), slice(8, 12))])
    found = promerge(scene.keys.to(dtype), (12, 14))
    assert all(o.mask.dtype == torch.bool and o.mask.device.type == "cpu" for o in found)
    assert as_sets([o.mask for o in found]) == as_sets(scene.objects)


# --- steps ------------------------------------------------------------------------------------


def test_seeds_are_every_stride_patches_from_the_corner():
    assert seed_indices((9, 10), 4, torch.device("cpu")).tolist() == [
        0,
        4,
        8,
        40,
        44,
        48,
        80,
        84,
        88,
    ]
    assert seed_indices((2, 2), 1, torch.device("cpu")).tolist() == [0, 1, 2, 3]


def test_a_side_counts_when_more_than_half_of_it_is_in_the_mask():
    masks = torch.zeros(3, 4, 6, dtype=torch.bool)
    masks[0, 0, :3] = True  # half of the top row: 0.5 rounds to 0
    masks[1, 0, :4] = True  # two thirds of the top row
    masks[2, :, :] = True
    masks[2, 1:3, 1:5] = False  # a frame holds all four sides
    assert sides_in_mask(masks).tolist() == [0, 1, 4]


def test_background_is_the_majority_of_the_candidates():
    candidates = torch.zeros(3, 4, 5, dtype=torch.bool)
    candidates[0, :2] = True
    candidates[1, :3] = True
    candidates[2, 1:] = True
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[:3] = True  # held by two or three of the three; the last row by one
    assert torch.equal(background_vote(candidates, 0.1), expected)
    assert background_vote(candidates, 0.75) is not None  # 75 % of the grid: enough
    assert background_vote(candidates, 0.8) is None
    assert background_vote(candidates[:0], 0.1) is None


def test_proposals_are_components_at_least_half_the_seeds_component():
    grid_hw = (6, 8)
    mask = torch.zeros(2, *grid_hw, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True  # the seed's component: 4
    mask[0, 4:6, 0:1] = True  # 2 = 0.5 * 4: kept
    mask[0, 0:1, 5:6] = True  # 1: dropped
    mask[1, 3:6, 3:8] = True  # the second seed (0, 7) is outside its mask: nothing
    proposals = split_proposals(mask, torch.tensor([0, 7]), grid_hw, 0.5)
    expected = [
        mask[0] & block_mask(grid_hw, (slice(0, 2), slice(0, 2))),
        mask[0]
        & ~block_mask(grid_hw, (slice(0, 6), slice(2, 8)))
        & ~block_mask(grid_hw, (slice(0, 2), slice(0, 2))),
    ]
    assert [p.reshape(grid_hw).tolist() for p in proposals] == [e.tolist() for e in expected]


def test_cascade_filter_drops_repeats_background_and_similar_keys():
    n = 10
    cells = torch.zeros(5, n, dtype=torch.bool)
    cells[0, 0:2] = True  # kept
    cells[1, 0:2] = True  # a repeat: no new cell
    cells[2, 0:3] = True  # its one new cell (2) is background: 1 >= 0.8
    cells[3, 4:8] = True  # keys like the background's
    cells[4, 0:6] = True  # new cells 2..5: half background, kept
    background = torch.zeros(n, dtype=torch.bool)
    background[2:4] = True
    similarity = torch.tensor([0.0, 0.0, 0.0, 0.1, 0.05])
    kept = cascade_filter(cells, similarity, background, max_overlap=0.8, max_similarity=0.1)
    assert kept == [0, 4]


def test_merge_joins_by_overlap_or_by_overlap_and_similar_keys():
    n = 20
    unit = F.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(0)), dim=1)

    def prop(start: int, stop: int, mean: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        cells = torch.zeros(n, dtype=torch.bool)
        cells[start:stop] = True
        return cells, torch.tensor(mean)

    big = prop(0, 10, [1.0, 0, 0, 0])
    inside = prop(4, 8, [0.0, 1, 0, 0])  # overlap 1 > 0.5: joins whatever its keys
    edge_alike = prop(8, 14, [1.0, 0, 0, 0])  # overlap 2 / 6 > 0.1 with big, same keys: joins
    edge_other = prop(12, 20, [0.0, 0, 1, 0])  # no overlap with big: a group of its own...
    groups = merge(
        [inside, edge_other, big, edge_alike], unit, overlap=0.5, min_overlap=0.1, similarity=0.1
    )
    cells = sorted((g.cells.nonzero()[:, 0].tolist() for g in groups), key=len)
    # ...which edge_alike overlaps by 2 / 6 > 0.1 but with other keys: not joined.
    assert cells == [list(range(12, 20)), list(range(0, 14))]


def test_a_merged_group_is_kept_whatever_its_mean_key():
    # A+C and C+B pass the background test (0.07 < 0.1) and merge; their union leans towards
    # the background (0.11): the authors keep it, tested as proposals only.
    keys, parts = leaning_scene()
    [found] = promerge(keys, (12, 16))
    assert torch.equal(found.mask, parts[0] | parts[1] | parts[2])
    unit = F.normalize(keys, dim=1)
    background = unit[~found.mask.flatten()].mean(dim=0)
    proposal = float(unit[(parts[0] | parts[1]).flatten()].mean(dim=0) @ background)
    assert found.score == pytest.approx((0.1 - proposal) / 1.1, abs=1e-6)  # no background cell
    assert found.score > 0.0


def test_the_background_test_still_drops_single_proposals():
    keys, _ = leaning_scene()
    assert promerge(keys, (12, 16), max_background_similarity=0.06) == []  # 0.07 >= 0.06


def test_merge_names_the_proposals_of_each_group():
    unit = F.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    cells = torch.zeros(3, 10, dtype=torch.bool)
    cells[0, 0:4], cells[1, 2:5], cells[2, 7:9] = True, True, True
    masks = [(c, unit[c].mean(dim=0)) for c in cells]
    groups = merge(masks, unit, overlap=0.5, min_overlap=0.1, similarity=0.1)
    assert sorted(g.members for g in groups) == [(0, 1), (2,)]


def test_promerge_rejects_bad_input():
    with pytest.raises(ValueError, match="stride"):
        promerge(torch.randn(12, 4), (3, 4), stride=0)
    with pytest.raises(ValueError, match="holds 20 patches"):
        promerge(torch.randn(12, 4), (4, 5))
    assert promerge(torch.zeros(0, 4), (0, 4)) == []


def test_promerge_is_registered_with_the_authors_defaults():
    assert FUNCTIONS["promerge"] is promerge
    info = methods.get("promerge")
    assert info.default_max_side == 480 and info.inputs == frozenset()
    assert info.defaults() == {
        "stride": 4,
        "tau": 0.2,
        "min_background_frac": 0.1,
        "min_component_ratio": 0.5,
        "max_background_overlap": 0.8,
        "max_background_similarity": 0.1,
        "merge_overlap": 0.5,
        "merge_min_overlap": 0.1,
        "merge_similarity": 0.1,
        "max_objects": 20,  # the authors keep every object; hundreds can each cost a CRF
    }
