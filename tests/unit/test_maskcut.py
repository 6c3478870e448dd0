from __future__ import annotations

import pytest
import torch
from zerolabel.discovery import FUNCTIONS, ObjectMask
from zerolabel.discovery import maskcut as maskcut_module
from zerolabel.discovery.maskcut import (
    count_fg_corners,
    is_new_object,
    maskcut,
    oriented_foreground,
)
from zerolabel.discovery.tokencut import tokencut

from tests.unit.synthetic import block_mask, planted_keys

TWO_OBJECTS = [
    pytest.param((12, 14), [(slice(1, 5), slice(1, 5)), (slice(7, 10), slice(8, 12))], id="apart"),
    pytest.param(
        (10, 16), [(slice(2, 8), slice(1, 6)), (slice(3, 6), slice(9, 14))], id="side-by-side"
    ),
    pytest.param((24, 20), [(slice(3, 9), slice(4, 16)), (slice(14, 21), slice(2, 7))], id="large"),
]


def as_sets(masks: list[torch.Tensor]) -> set[bytes]:
    return {m.numpy().tobytes() for m in masks}


@pytest.mark.parametrize(("grid_hw", "blocks"), TWO_OBJECTS)
def test_maskcut_finds_two_planted_objects_as_two_masks(grid_hw, blocks):
    scene = planted_keys(grid_hw, blocks, seed=2)
    found = maskcut(scene.keys, grid_hw)
    assert len(found) == 2
    assert as_sets([o.mask for o in found]) == as_sets(scene.objects)
    assert all(0.0 <= o.score <= 1.0 for o in found)


def test_a_single_object_is_reported_once():
    # Later cuts find the zeroed (claimed) patches again: dropped as repeats, or emptied by
    # the subtraction of earlier masks.
    scene = planted_keys((12, 14), [(slice(2, 6), slice(3, 8))], seed=1)
    found = maskcut(scene.keys, (12, 14), max_objects=3)
    assert len(found) == 1
    assert torch.equal(found[0].mask, scene.objects[0])


def test_one_cut_without_corner_flip_is_tokencut():
    scene = planted_keys((9, 11), [(slice(2, 6), slice(3, 9))], seed=6)
    once = maskcut(scene.keys, (9, 11), tau=0.2, max_objects=1)
    assert len(once) == 1
    assert torch.equal(once[0].mask, tokencut(scene.keys, (9, 11), tau=0.2)[0].mask)
    assert once[0].score == pytest.approx(tokencut(scene.keys, (9, 11), tau=0.2)[0].score)


# --- corner rule ------------------------------------------------------------------------------


def test_corner_rule_turns_a_frame_into_background():
    # A one-patch frame of distinct keys: the smaller region, so it carries the eigenvector's
    # peak. TokenCut returns the frame; MaskCut sees four foreground corners and flips.
    frame = torch.ones(10, 10, dtype=torch.bool)
    frame[1:-1, 1:-1] = False
    scene = planted_keys((10, 10), [frame], seed=3)
    assert torch.equal(tokencut(scene.keys, (10, 10))[0].mask, frame)
    first = maskcut(scene.keys, (10, 10))[0]
    assert torch.equal(first.mask, ~frame)


def test_oriented_foreground_flips_on_three_corners_and_reseeds():
    grid_hw = (3, 3)
    v = torch.tensor([0.9, 0.0, 0.5, 0.0, -0.2, 0.0, 0.4, -0.3, -0.1], dtype=torch.float64)
    foreground, seed = oriented_foreground(v, grid_hw)
    assert count_fg_corners(v > v.mean(), grid_hw) == 3
    assert foreground.tolist() == (v <= v.mean()).tolist()
    assert seed == 7  # argmax of -v


def test_oriented_foreground_flips_when_the_peak_is_below_the_mean():
    v = torch.tensor([0.1, 0.2, -0.9, 0.3, 0.1, 0.2], dtype=torch.float64)
    foreground, seed = oriented_foreground(v, (2, 3))
    assert foreground.tolist() == [False, False, True, False, False, False] and seed == 2


def test_oriented_foreground_keeps_a_central_peak():
    v = torch.tensor([-0.1, -0.1, -0.1, -0.1, 0.8, 0.3, -0.1, -0.1, -0.1], dtype=torch.float64)
    foreground, seed = oriented_foreground(v, (3, 3))
    assert foreground.tolist() == (v > v.mean()).tolist() and seed == 4


def test_count_fg_corners():
    grid = torch.zeros(4, 5, dtype=torch.bool)
    grid[0, 0] = grid[3, 4] = grid[1, 1] = True
    assert count_fg_corners(grid, (4, 5)) == 2
    assert count_fg_corners(grid.flatten(), (4, 5)) == 2


# --- filters ----------------------------------------------------------------------------------


def test_area_filter_applies_from_the_second_cut():
    # The single-patch object is cut first (no filter on the first cut); the 36-patch object
    # (9 % of the grid) comes second and survives only while min_area_frac is below 9 %.
    grid_hw = (20, 20)
    speck, block = (slice(14, 15), slice(15, 16)), (slice(3, 9), slice(3, 9))
    scene = planted_keys(grid_hw, [block, speck], seed=4)
    loose = maskcut(scene.keys, grid_hw, min_area_frac=0.05)
    strict = maskcut(scene.keys, grid_hw, min_area_frac=0.1)
    assert [o.mask for o in loose][0].sum() == 1
    assert as_sets([o.mask for o in loose]) == as_sets(scene.objects)
    assert as_sets([o.mask for o in strict]) == as_sets([block_mask(grid_hw, speck)])


def scripted_cuts(monkeypatch, masks: list[torch.Tensor]) -> None:
    """Make each call of MaskCut's cut step return the next of ``masks`` (eigenvalue 0.25)."""
    queue = list(masks)
    monkeypatch.setattr(
        maskcut_module, "salient_component", lambda *args, **kwargs: (queue.pop(0), 0.25)
    )


def test_a_repeat_is_dropped_and_becomes_an_empty_previous_mask(monkeypatch):
    # Cut 2 overlaps cut 1 (IoU 12 / 16 > 0.5) and is dropped. Dropping leaves an all-zero
    # previous mask, so the identical cut 3 passes the IoU test and contributes its new patches.
    grid_hw = (8, 8)
    first = block_mask(grid_hw, (slice(2, 5), slice(2, 6)))
    grown = block_mask(grid_hw, (slice(2, 6), slice(2, 6)))
    scripted_cuts(monkeypatch, [first, grown, grown])
    found = maskcut(torch.randn(64, 4), grid_hw, max_objects=3)
    assert [o.mask.tolist() for o in found] == [first.tolist(), (grown & ~first).tolist()]
    assert [o.score for o in found] == [0.75, 0.75]

    scripted_cuts(monkeypatch, [first, grown])
    assert len(maskcut(torch.randn(64, 4), grid_hw, max_objects=2)) == 1
    scripted_cuts(monkeypatch, [first, grown])
    assert len(maskcut(torch.randn(64, 4), grid_hw, max_objects=2, max_iou_with_previous=0.8)) == 2


def test_is_new_object_thresholds():
    previous = block_mask((10, 10), (slice(0, 2), slice(0, 2)))  # 4 patches
    half = block_mask((10, 10), (slice(0, 2), slice(0, 4)))  # IoU 4 / 8 = 0.5: not a repeat
    assert is_new_object(half, previous, min_area_frac=0.01, max_iou=0.5)
    assert not is_new_object(half, previous, min_area_frac=0.01, max_iou=0.49)
    one_percent = block_mask((10, 10), (slice(9, 10), slice(9, 10)))  # area 1 % <= 1 %
    assert not is_new_object(one_percent, previous, min_area_frac=0.01, max_iou=0.5)
    assert is_new_object(one_percent, torch.zeros(10, 10, dtype=torch.bool), 0.009, 0.5)


# --- contract ---------------------------------------------------------------------------------


def test_masks_are_disjoint_bool_grids():
    scene = planted_keys((12, 14), [(slice(1, 5), slice(1, 5)), (slice(6, 11), slice(6, 13))])
    found = maskcut(scene.keys, (12, 14))
    total = torch.stack([o.mask for o in found]).sum(dim=0)
    assert all(o.mask.dtype == torch.bool and o.mask.shape == (12, 14) for o in found)
    assert int(total.max()) == 1


def test_maskcut_edge_cases():
    assert maskcut(torch.randn(12, 4), (3, 4), max_objects=0) == []
    assert maskcut(torch.randn(1, 4), (1, 1)) == []
    with pytest.raises(ValueError, match="max_objects"):
        maskcut(torch.randn(12, 4), (3, 4), max_objects=-1)
    with pytest.raises(ValueError, match="holds 12 patches"):
        maskcut(torch.randn(10, 4), (3, 4))


def test_object_mask_checks_its_fields():
    with pytest.raises(ValueError, match="bool"):
        ObjectMask(mask=torch.zeros(3, 3), score=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ObjectMask(mask=torch.zeros(3, 3, dtype=torch.bool), score=1.5)


def test_maskcut_is_registered():
    assert FUNCTIONS["maskcut"] is maskcut


def test_featureless_keys_give_the_same_zero_score_objects_every_time():
    # A very dark photo: every patch has (nearly) the same key, every cut is arbitrary.
    base = torch.linspace(-1, 1, 16)
    keys = base.repeat(20 * 20, 1) + 1e-6 * torch.sin(torch.arange(20 * 20 * 16.0)).reshape(-1, 16)
    runs = [maskcut(keys, (20, 20)) for _ in range(3)]
    assert runs[0] and all(o.score == 0.0 for o in runs[0])
    for found in runs[1:]:
        assert [o.mask.numpy().tobytes() for o in found] == [
            o.mask.numpy().tobytes() for o in runs[0]
        ]
