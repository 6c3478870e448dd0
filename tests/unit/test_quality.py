"""The region quality score: its factors on patch masks, and the pipeline's use of it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from zerolabel import quality
from zerolabel.contract import DiscoverySpec
from zerolabel.discovery import ObjectMask
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import Discoverer
from zerolabel.vit.backbone import load_backbone


def grid(rows: list[str]) -> np.ndarray:
    """A bool grid from strings of '#' (True) and '.' (False)."""
    return np.array([[c == "#" for c in row] for row in rows])


INSIDE = grid(["......", ".##...", ".##...", "......"])
L_SHAPE = grid(["......", ".#....", ".###..", "......"])
CORNER = grid(["##....", "##....", "......", "......"])
EVERYWHERE = np.ones((4, 6), dtype=bool)


def test_compactness_is_the_share_of_the_bounding_box():
    assert quality.compactness(INSIDE) == 1.0
    assert quality.compactness(L_SHAPE) == pytest.approx(4 / 6)


def test_border_contact_counts_sides():
    assert [quality.sides_touched(m) for m in (INSIDE, L_SHAPE, CORNER, EVERYWHERE)] == [
        0,
        0,
        2,
        4,
    ]
    assert quality.border_factor(INSIDE) == 1.0
    assert quality.border_factor(CORNER) == pytest.approx(1 - 2 * quality.BORDER_PENALTY)
    assert quality.border_factor(EVERYWHERE) == pytest.approx(1 - 4 * quality.BORDER_PENALTY)


def test_score_is_the_product_of_the_factors():
    q = quality.region_quality(L_SHAPE, 0.9)
    assert (q.confidence, q.stability) == (0.9, None)
    assert q.score == pytest.approx(0.9 * (4 / 6) * 1.0)
    corner = quality.region_score(CORNER, 0.9)
    assert corner == pytest.approx(0.9 * 1.0 * (1 - 2 * quality.BORDER_PENALTY))
    # Equal confidence: the clean interior blob ranks above the ragged and the border ones.
    assert quality.region_score(INSIDE, 0.9) > max(q.score, corner)
    assert quality.region_score(EVERYWHERE, 1.0) < quality.region_score(INSIDE, 0.5)


def test_stability_is_the_iou_with_a_second_mask_on_another_grid():
    same_at_double_resolution = np.kron(INSIDE, np.ones((2, 2), dtype=bool))
    assert quality.stability(INSIDE, same_at_double_resolution) == 1.0
    assert quality.stability(INSIDE, CORNER) == pytest.approx(1 / 7)
    assert quality.stability(INSIDE, np.flip(CORNER)) == 0.0
    shifted = grid(["......", "..##..", "..##..", "......"])
    assert quality.stability(INSIDE, shifted) == pytest.approx(2 / 6)
    q = quality.region_quality(INSIDE, 0.8, second=shifted)
    assert q.score == pytest.approx(0.8 * 2 / 6)


def test_resample_takes_the_cell_under_each_centre():
    source = grid(["#.", ".#"])
    assert quality.resample(source, (4, 4)).tolist() == np.kron(source, np.ones((2, 2))).tolist()
    assert quality.resample(np.kron(source, np.ones((3, 3), bool)), (2, 2)).tolist() == (
        source.tolist()
    )


@pytest.mark.parametrize(
    ("mask", "confidence", "message"),
    [
        (np.zeros((3, 3), bool), 0.5, "mask is empty"),
        (np.ones(4, bool), 0.5, r"\[h, w\] patch grid"),
        (INSIDE, 1.5, "confidence must lie in"),
    ],
)
def test_bad_inputs_are_refused(mask, confidence, message):
    with pytest.raises(ValueError, match=message):
        quality.region_quality(mask, confidence)


def test_the_pipeline_scores_regions_with_the_quality_of_their_patch_mask():
    torch.manual_seed(0)
    backbone = load_backbone(
        "vit_small_patch16_224", device="cpu", random_weights=True, model_kwargs={"depth": 2}
    )
    spec = DiscoverySpec(method="maskcut", backbone="vit_small_patch16_224", weights="random")
    runner = Discoverer(backbone, spec)
    masks = [L_SHAPE, CORNER]  # a 4 x 6 grid: a 64 x 96 image

    def fake_method(keys, grid_hw, **params):
        assert tuple(grid_hw) == (4, 6)
        return [ObjectMask(torch.from_numpy(m), 0.9) for m in masks]

    runner.method = fake_method
    pixels = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    image = LoadedImage("a.png", pixels, (64, 96), hashlib.sha256(pixels.tobytes()).hexdigest())
    regions = runner.run([image])[0]
    assert [r.score for r in regions] == [quality.region_score(m, 0.9) for m in masks]
    assert regions[0].score != regions[1].score != 0.9
