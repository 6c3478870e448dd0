"""COCO export: the dict loads in pycocotools and gives the regions back exactly."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from zerolabel.contract import Box, DiscoveryResult, Region
from zerolabel.formats.coco import coco_from_results
from zerolabel.geometry import mask_to_box, rle_encode

H, W = 30, 50  # non-square: a swapped width/height shows up as a wrong shape


def _blob(hw: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    mask[rows, cols] = True
    mask[rows.start, cols.start] = False  # not a plain rectangle
    return mask


def _masked_region(mask: np.ndarray, score: float) -> Region:
    box = mask_to_box(mask)
    assert box is not None
    return Region(box=box, score=score, method="maskcut", mask=rle_encode(mask))


MASK_A = _blob((H, W), slice(2, 12), slice(5, 40))
MASK_B = _blob((H, W), slice(15, 29), slice(30, 49))
TALL_MASK = _blob((W, H), slice(10, 45), slice(3, 9))  # an image taller than wide


def _results() -> list[DiscoveryResult]:
    return [
        DiscoveryResult(
            "a.png",
            (H, W),
            [
                _masked_region(MASK_A, 0.9),
                Region(Box(1.5, 2.0, 11.5, 27.0), 0.3, "lost"),  # box only
                _masked_region(MASK_B, 0.6),
            ],
        ),
        DiscoveryResult("broken.png", (0, 0), error="cannot identify image file"),
        DiscoveryResult("nothing.png", (H, W)),  # processed, no object: still an image
        DiscoveryResult("tall.png", (W, H), [_masked_region(TALL_MASK, 0.8)]),
    ]


NAMES = ["a.png", "broken.png", "nothing.png", "tall.png"]


def _load(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(dataset))  # what a reader of the JSON file gets
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_images_skip_errors_and_keep_height_width() -> None:
    dataset = coco_from_results(_results(), NAMES)
    images = dataset["images"]
    assert [im["file_name"] for im in images] == ["a.png", "nothing.png", "tall.png"]
    assert [im["id"] for im in images] == [1, 2, 3]
    assert (images[0]["width"], images[0]["height"]) == (W, H)
    assert (images[2]["width"], images[2]["height"]) == (H, W)
    assert dataset["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert coco_from_results(_results(), NAMES, "thing")["categories"][0]["name"] == "thing"


def test_pycocotools_gives_back_masks_boxes_and_areas() -> None:
    results = _results()
    coco = _load(coco_from_results(results, NAMES))
    assert sorted(coco.getImgIds()) == [1, 2, 3]
    assert coco.getAnnIds(imgIds=[2]) == []
    expected = {1: results[0].regions, 3: results[3].regions}
    for image_id, regions in expected.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(regions)
        for ann, region in zip(anns, regions, strict=True):
            x, y, w, h = ann["bbox"]
            assert Box(x, y, x + w, y + h) == region.box
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert ann["score"] == region.score
            if region.mask is None:
                assert "segmentation" not in ann
                assert ann["area"] == pytest.approx(region.box.width * region.box.height)
                continue
            mask = coco.annToMask(ann)
            image = coco.loadImgs([image_id])[0]
            assert mask.shape == (image["height"], image["width"])
            np.testing.assert_array_equal(mask.astype(bool), _mask_of(region))
            assert ann["area"] == int(mask.sum())
    ids = [a["id"] for a in coco.dataset["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def _mask_of(region: Region) -> np.ndarray:
    for mask in (MASK_A, MASK_B, TALL_MASK):
        if rle_encode(mask) == region.mask:
            return mask
    raise AssertionError("unknown region")


def _precision_at_half_iou(gt: COCO, dt: COCO, iou_type: str, image_ids: list[int]) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, dt, iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][0, :, 0, 0, -1]  # IoU 0.5, every recall, 100 dets


def test_load_res_accepts_the_annotations_and_scores_them_perfectly() -> None:
    dataset = coco_from_results(_results(), NAMES)
    detections = copy.deepcopy(dataset["annotations"])  # loadRes edits its input
    assert all({"image_id", "category_id", "bbox", "score"} <= set(d) for d in detections)
    assert sum("segmentation" in d for d in detections) == 3
    gt = _load(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
    assert len(dt.getAnnIds()) == len(detections)
    # predictions scored against themselves: every detection matches at IoU 0.5
    assert _precision_at_half_iou(gt, dt, "bbox", [1, 2, 3]).min() == pytest.approx(1.0)
    # masks only where every region has one (a box-only region has no segmentation)
    assert _precision_at_half_iou(gt, dt, "segm", [3]).min() == pytest.approx(1.0)


def test_mismatched_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="file names"):
        coco_from_results(_results(), NAMES[:2])
    region = Region(Box(0, 0, 2, 2), 0.5, "lost", mask=rle_encode(np.ones((W, H), dtype=bool)))
    with pytest.raises(ValueError, match="mask is"):
        coco_from_results([DiscoveryResult("a.png", (H, W), [region])], ["a.png"])
