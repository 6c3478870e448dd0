"""Training FOUND's head on synthetic features, and patch targets from annotated objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zerolabel.contract import Box
from zerolabel.discovery.found import found
from zerolabel.formats.dataset import ObjectRecord
from zerolabel.geometry import Frame, rle_encode
from zerolabel.loop.fit_found import HeadTraining, train_head
from zerolabel.loop.fitting import object_targets

from tests.unit.synthetic import block_mask, planted_keys, random_blocks

SMALL = HeadTraining(epochs=40, lr=0.1, batch_size=2048)


def training_set(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of ``count`` 10 x 10 scenes with one random planted block each, keys scaled
    differently per scene, and the planted masks as targets."""
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k in range(count):
        [block] = random_blocks((10, 10), 1, generator)
        scene = planted_keys((10, 10), [block], scale=1.0 + k % 3, seed=seed + k)
        xs.append(scene.keys)
        ys.append(scene.objects[0].flatten().float())
    return torch.cat(xs), torch.cat(ys)


def test_the_trained_head_finds_the_planted_object():
    x, y = training_set(12, seed=0)
    weight, bias, loss = train_head(x, y, SMALL)
    assert weight.shape == (32,) and bias.shape == (1,) and loss < 0.1
    grid_hw, block = (12, 14), (slice(3, 9), slice(4, 10))
    scene = planted_keys(grid_hw, [block], scale=5.0, seed=99)  # unseen scale and grid
    attention = torch.full((4, 12 * 14), 0.005)  # uniform: the head alone decides
    [obj] = found(scene.keys, grid_hw, attention=attention, head_weight=weight, head_bias=bias)
    assert torch.equal(obj.mask, block_mask(grid_hw, block))


def test_the_head_applies_to_raw_features_as_trained_on_standardised_ones():
    x, y = training_set(6, seed=1)
    x = x * 40.0 + 7.0  # keys far from unit scale: standardising keeps training stable
    weight, bias, _ = train_head(x, y, SMALL)
    predicted = torch.sigmoid(x @ weight + bias) > 0.5
    assert float((predicted == y.bool()).float().mean()) > 0.99


def test_training_is_repeatable_and_the_seed_matters():
    x, y = training_set(4, seed=2)
    config = HeadTraining(epochs=2, batch_size=64, seed=3)
    first, again = train_head(x, y, config), train_head(x, y, config)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other = train_head(x, y, HeadTraining(epochs=2, batch_size=64, seed=4))
    assert not torch.equal(first[0], other[0])


def test_bad_training_settings_are_refused():
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        HeadTraining(epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        HeadTraining(lr=0.0)
    with pytest.raises(ValueError, match="M >= 1"):
        train_head(torch.zeros(0, 4), torch.zeros(0))


def test_a_box_marks_the_patches_it_covers_at_least_half():
    frame = Frame(original_hw=(64, 96), content_hw=(64, 96), patch_size=16)
    box = ObjectRecord(Box(16.0, 8.0, 56.0, 40.0), "object")  # x 16-56, y 8-40
    targets = object_targets([box], (64, 96), frame)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0:3, 1:3] = True  # rows 0 and 2 are half covered (8 of 16 px rows): in
    expected[1, 3] = True  # column 3 is half covered too, its corners only a quarter: out
    assert torch.equal(targets, expected)


def test_masks_count_by_their_pixels_and_positions_scale_with_the_image():
    mask = np.zeros((32, 48), dtype=bool)
    mask[0:16, 24:48] = True  # the top-right quarter, annotated on a half-size image
    record = ObjectRecord(Box(24.0, 0.0, 48.0, 16.0), "object", rle_encode(mask))
    frame = Frame(original_hw=(64, 96), content_hw=(40, 60), patch_size=10)  # resized, padded
    targets = object_targets([record], (32, 48), frame)
    assert targets.shape == (4, 6)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[0:2, 3:6] = True
    assert torch.equal(targets, expected)


def test_padding_is_never_a_target():
    frame = Frame(original_hw=(20, 20), content_hw=(20, 20), patch_size=16)  # 32 x 32 padded
    everything = ObjectRecord(Box(0.0, 0.0, 20.0, 20.0), "object")
    targets = object_targets([everything], (20, 20), frame)
    assert targets.tolist() == [[True, False], [False, False]]  # 4 of 16 px in the others
