"""The pipeline with refinement: pixel masks off the patch grid, boxes from the refined mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from zerolabel import pipeline
from zerolabel.contract import Box, DiscoverySpec
from zerolabel.geometry import mask_iou, mask_to_box, rle_decode
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import Discoverer
from zerolabel.vit.backbone import Backbone, load_backbone

from tests.patch_grid import is_patch_aligned

H, W = 96, 128


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return load_backbone(
        "vit_small_patch16_224", device="cpu", random_weights=True, model_kwargs={"depth": 2}
    )


def scene(scale: int = 1) -> tuple[LoadedImage, np.ndarray]:
    """A bright textured rectangle (edges off the 16 px grid) on a dark textured background."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 60, (H, W, 3)).astype(np.uint8)
    truth = np.zeros((H, W), dtype=bool)
    truth[21:70, 37:99] = True
    pixels[truth] = rng.integers(190, 250, (int(truth.sum()), 3))
    big = np.kron(pixels, np.ones((scale, scale, 1), dtype=np.uint8))
    truth = np.kron(truth, np.ones((scale, scale), dtype=bool))
    return LoadedImage("scene.png", big, big.shape[:2], "0"), truth


def run(backbone: Backbone, image: LoadedImage, **spec: object) -> tuple[Discoverer, list]:
    runner = Discoverer(
        backbone,
        DiscoverySpec(method="maskcut", backbone="vit_small_patch16_224", weights="random", **spec),
    )
    return runner, runner.run([image])[0]


def test_maskcut_masks_follow_the_object_not_the_patch_grid(backbone):
    image, truth = scene()
    runner, regions = run(backbone, image)  # refinement is MaskCut's default
    assert regions and runner.timings.refine_s > 0
    for region in regions:
        mask = rle_decode(region.mask)
        assert not is_patch_aligned(mask, runner.frame(image))
        assert region.box == mask_to_box(mask)  # the box is the refined mask's
    assert regions[0].box == Box(37.0, 21.0, 99.0, 70.0)
    assert mask_iou(rle_decode(regions[0].mask), truth) > 0.99


def test_without_refinement_masks_and_boxes_stay_on_the_patch_grid(backbone):
    image, _ = scene()
    runner, regions = run(backbone, image, refine=False)
    assert regions and runner.timings.refine_s == 0.0
    for region in regions:
        mask = rle_decode(region.mask)
        assert is_patch_aligned(mask, runner.frame(image))
        assert all(v % 16 == 0 for v in region.box.to_list())


def test_a_resized_input_is_refined_at_the_network_size_and_returned_at_the_original(backbone):
    image, truth = scene(scale=2)  # 192 x 256, capped to 96 x 128 for the network
    runner, regions = run(backbone, image, max_side=128)
    assert runner.frame(image).content_hw == (H, W)
    mask = rle_decode(regions[0].mask)
    assert mask.shape == (2 * H, 2 * W)
    perimeter = 2 * (124 + 98)  # the true rectangle: x 74..198, y 42..140
    assert (mask ^ truth).sum() / perimeter < 1.0  # under a pixel off along the edge, on average
    true_box = (74.0, 42.0, 198.0, 140.0)  # within one network pixel (2 px) on every side
    assert all(abs(a - b) <= 2 for a, b in zip(regions[0].box.to_list(), true_box, strict=True))


def test_boxes_only_still_come_from_the_refined_mask(backbone):
    image, _ = scene()
    _, regions = run(backbone, image, masks=False)
    assert regions[0].mask is None and regions[0].box == Box(37.0, 21.0, 99.0, 70.0)


def test_a_mask_the_refinement_drops_leaves_no_region(backbone, monkeypatch):
    image, _ = scene()
    monkeypatch.setattr(pipeline.refine, "refine_patch_mask", lambda *args: None)
    runner, regions = run(backbone, image)
    assert regions == []
    _, unrefined = run(backbone, image, refine=False)
    assert unrefined  # the same cut without refinement is kept, on the grid
