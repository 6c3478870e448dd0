"""Patch grid -> pixel box/mask mapping: the +1, scaling and clipping."""

from __future__ import annotations

import numpy as np
import pytest
from zerolabel.contract import Box
from zerolabel.geometry import (
    Frame,
    box_iou,
    mask_to_box,
    patch_mask_to_box,
    patch_mask_to_pixel_mask,
)
from zerolabel.vit.preprocess import content_size


def _patch_mask(grid_hw, rows, cols):
    mask = np.zeros(grid_hw, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_box_is_max_exclusive_in_patch_units():
    frame = Frame(original_hw=(160, 240), content_hw=(160, 240), patch_size=16)
    box = patch_mask_to_box(_patch_mask(frame.grid_hw, slice(2, 5), slice(3, 6)), frame)
    assert box == Box(48, 32, 96, 80)  # cols 3..5 -> x 48..96, rows 2..4 -> y 32..80


def test_box_is_clipped_to_the_original_size_in_the_padded_band():
    frame = Frame(original_hw=(100, 150), content_hw=(100, 150), patch_size=16)
    assert frame.grid_hw == (7, 10) and frame.padded_hw == (112, 160)
    box = patch_mask_to_box(_patch_mask(frame.grid_hw, slice(5, 7), slice(8, 10)), frame)
    assert box == Box(128, 80, 150, 100)


def test_box_scales_back_from_a_resized_input():
    frame = Frame(original_hw=(3000, 4000), content_hw=(768, 1024), patch_size=16)
    box = patch_mask_to_box(_patch_mask(frame.grid_hw, slice(0, 48), slice(32, 64)), frame)
    assert box == Box(2000, 0, 4000, 3000)


def test_square_input_scales_each_axis_on_its_own():
    frame = Frame(original_hw=(300, 600), content_hw=(480, 480), patch_size=16)
    box = patch_mask_to_box(_patch_mask(frame.grid_hw, slice(0, 15), slice(15, 30)), frame)
    assert box == Box(300, 0, 600, 150)


def test_empty_mask_has_no_box():
    frame = Frame((32, 32), (32, 32), 16)
    assert patch_mask_to_box(np.zeros((2, 2), bool), frame) is None
    assert mask_to_box(np.zeros((4, 4), bool)) is None


@pytest.mark.parametrize(
    ("original_hw", "content_hw"),
    [
        ((160, 240), (160, 240)),
        ((100, 150), (100, 150)),
        ((3000, 4000), (240, 320)),
        ((375, 500), (360, 480)),
        ((333, 500), (480, 480)),
        ((500, 353), (480, 339)),
    ],
)
def test_pixel_mask_box_equals_patch_box(original_hw, content_hw):
    frame = Frame(original_hw, content_hw, 16)
    gh, gw = frame.grid_hw
    mask = _patch_mask(frame.grid_hw, slice(1, gh - 1), slice(2, gw))
    pixel = patch_mask_to_pixel_mask(mask, frame)
    assert pixel.shape == original_hw
    assert mask_to_box(pixel) == patch_mask_to_box(mask, frame)


def test_content_size_caps_the_longer_side_and_never_enlarges():
    assert content_size((3000, 4000), max_side=1024) == (768, 1024)
    assert content_size((375, 500), max_side=1024) == (375, 500)
    assert content_size((375, 500), max_side=None) == (375, 500)
    assert content_size((375, 500), square=480) == (480, 480)


def test_box_iou():
    assert box_iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0.0
