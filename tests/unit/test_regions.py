"""The one Label Studio region reader: boxes, masks as Rle, object keys; clustering and export
see the same box for a region."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from zerolabel.contract import Box, DiscoveryResult, Region
from zerolabel.errors import RegionError
from zerolabel.formats.export import export, read_ls_export
from zerolabel.geometry import box_iou, mask_to_box, rle_encode
from zerolabel.labelstudio.brush import brush_rle_encode
from zerolabel.labelstudio.regions import (
    AGREE_IOU,
    BOTH_EDITED,
    BOX_KEPT,
    DELETED,
    MASK_KEPT,
    STALE_BOX,
    STALE_MASK,
    UNRECORDED,
    object_id,
    object_key,
    read_objects,
    read_region,
    result_image_hw,
)
from zerolabel.labelstudio.tasks import Target, prediction
from zerolabel.loop.pseudo_classes import describe_tasks, object_boxes, relabel

H, W = 60, 80


def _item(region_id: str, kind: str, value: dict[str, Any], hw: tuple[int, int] = (H, W)) -> Any:
    return {
        "id": region_id,
        "type": kind,
        "from_name": "label",
        "to_name": "image",
        "original_width": hw[1],
        "original_height": hw[0],
        "image_rotation": 0,
        "value": value,
    }


def _rect(region_id: str, box: Box, rotation: float = 0.0, label: str = "thing") -> Any:
    value = {
        "x": 100 * box.x0 / W,
        "y": 100 * box.y0 / H,
        "width": 100 * box.width / W,
        "height": 100 * box.height / H,
        "rotation": rotation,
        "rectanglelabels": [label],
    }
    return _item(region_id, "rectanglelabels", value)


def _brush(region_id: str, mask: np.ndarray) -> Any:
    value = {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": ["blob"]}
    return _item(region_id, "brushlabels", value, mask.shape)


def _blob() -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    return ((yy - 30) / 12) ** 2 + ((xx - 50) / 20) ** 2 < 1


def _rotated_bounds(box: Box, degrees: float) -> Box:
    """Axis-aligned bounds of ``box`` turned clockwise (y down) about its top-left corner."""
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    corners = [(0.0, 0.0), (box.width, 0.0), (box.width, box.height), (0.0, box.height)]
    xs = [box.x0 + dx * cos - dy * sin for dx, dy in corners]
    ys = [box.y0 + dx * sin + dy * cos for dx, dy in corners]
    return Box(max(min(xs), 0), max(min(ys), 0), min(max(xs), W), min(max(ys), H))


class _RecordingCache:
    """Stands in for the descriptor cache: keeps the boxes it is asked to describe."""

    def __init__(self) -> None:
        self.boxes: list[Box] = []

    def get_or_compute(self, backbone: Any, image: Any, boxes: list[Box]) -> np.ndarray:
        self.boxes.extend(boxes)
        return np.zeros((len(boxes), 4), dtype=np.float32)


def _clustering_crops(task: dict[str, Any]) -> list[Box]:
    cache = _RecordingCache()
    _, failures = describe_tasks([task], lambda _: object(), None, cache)  # type: ignore[arg-type]
    assert failures == []
    return cache.boxes


@pytest.mark.parametrize(
    "rotation", [0.0, 30.0, 90.0, 135.0, -60.0, 200.0], ids=lambda r: f"{r:g}deg"
)
def test_clustering_crops_the_box_export_writes_for_a_rotated_rectangle(
    rotation: float, tmp_path: Path
) -> None:
    box = Box(50.0, 8.0, 78.0, 20.0)  # near the right edge: most turns leave the image
    result = [_rect("zl-0a1b2c-0-box", box, rotation), _brush("zl-0a1b2c-1-mask", _blob())]
    task = {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "predictions": [{"result": result}]}

    crops = _clustering_crops(task)
    paths = export([task], tmp_path, formats=("coco",), source="predictions")
    written = [
        Box(x, y, x + w, y + h)
        for x, y, w, h in (a["bbox"] for a in json.loads(paths["coco"].read_text())["annotations"])
    ]
    read = [o.box for o in read_ls_export([task], source="predictions").images[0].objects]
    assert crops == written == read
    assert crops[0].to_list() == pytest.approx(_rotated_bounds(box, rotation).to_list(), abs=1e-9)
    assert crops[1] == mask_to_box(_blob())


def test_our_box_and_mask_are_one_object_cropped_at_the_rectangle() -> None:
    mask = _blob()
    region = Region(Box(25.0, 15.0, 75.0, 45.0), 0.8, "maskcut", rle_encode(mask))
    items = prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), Target())["result"]
    assert [object_key(i["id"]) for i in items] == [object_id("v1", 0)] * 2
    (obj,) = read_objects(items, result_image_hw(items))
    assert obj.box == Box(25.0, 15.0, 75.0, 45.0) and obj.mask == rle_encode(mask)
    assert obj.score == pytest.approx(0.8)
    assert object_boxes(items) == {object_id("v1", 0): obj.box}


@pytest.mark.parametrize(
    ("region_id", "key"),
    [
        pytest.param("zl-0a1b2c-3-box", "zl-0a1b2c-3", id="our-box"),
        pytest.param("zl-0a1b2c-3-mask", "zl-0a1b2c-3", id="our-mask"),
        pytest.param("zl-0a1b2c-3", "zl-0a1b2c-3", id="no-part"),
        pytest.param("zl-notahash-3-box", "zl-notahash-3-box", id="not-our-form"),
        pytest.param("Xy7_aQ-box", "Xy7_aQ-box", id="drawn-in-ls"),
    ],
)
def test_object_key_strips_only_our_part_suffixes(region_id: str, key: str) -> None:
    assert object_key(region_id) == key


def test_a_brush_is_read_as_an_rle_and_its_tight_box() -> None:
    mask = _blob()
    region = read_region(_brush("p9", mask), (H, W))
    assert region.mask == rle_encode(mask) and region.box == mask_to_box(mask)
    assert (region.key, region.label, region.score) == ("p9", "blob", None)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        pytest.param(_rect("r", Box(1, 1, 5, 5)) | {"type": "polygonlabels"}, "unsupported"),
        pytest.param(_item("r", "rectanglelabels", {"x": "a"}), "without numeric"),
        pytest.param(_rect("r", Box(90, 1, 95, 5)), "empty rectangle"),
        pytest.param(_item("b", "brushlabels", {"format": "png"}), "brush format 'png'"),
        pytest.param(_brush("b", np.ones((H, W + 1), dtype=bool)), "does not decode"),
        pytest.param(_brush("b", np.zeros((H, W), dtype=bool)), "empty mask"),
    ],
)
def test_unreadable_items_name_the_reason(item: dict[str, Any], reason: str) -> None:
    with pytest.raises(RegionError, match=reason):
        read_region(item, (H, W))


def test_items_without_an_id_are_objects_of_their_own() -> None:
    items = [_rect("", Box(1, 1, 9, 9)), _rect("", Box(20, 20, 30, 30))]
    for item in items:
        del item["id"]
    assert [r.key for r in read_objects(items, (H, W))] == ["#0", "#1"]


def test_image_size_problems_are_reported_and_skip_the_task_in_clustering() -> None:
    with pytest.raises(RegionError, match="no size info"):
        result_image_hw([{"id": "q", "type": "choices", "value": {}}])
    with pytest.raises(RegionError, match="disagree"):
        result_image_hw([_rect("a", Box(1, 1, 5, 5)), _brush("b", np.ones((3, 4), dtype=bool))])
    turned = _rect("a", Box(1, 1, 5, 5)) | {"image_rotation": 90}
    task = {"id": 5, "data": {"image": "x.png"}, "predictions": [{"result": [turned]}]}
    cache = _RecordingCache()
    items, failures = describe_tasks([task], lambda _: object(), None, cache)  # type: ignore[arg-type]
    assert items == [] and cache.boxes == []
    assert failures == [
        (0, "image_rotation is set: the image was rotated in the editor (unsupported)")
    ]


# --- a box and a mask of one object that disagree ---------------------------------------------


def _predicted_pair() -> list[dict[str, Any]]:
    """zerolabel's box (25, 15, 75, 45) and blob mask of one object: they agree (IoU 0.6)."""
    region = Region(Box(25.0, 15.0, 75.0, 45.0), 0.8, "maskcut", rle_encode(_blob()))
    return prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), Target())["result"]


def _edit(items: list[dict[str, Any]], part: str, new: dict[str, Any]) -> list[dict[str, Any]]:
    """The items with the one whose id ends in ``part`` replaced by ``new`` (same id)."""
    return [new | {"id": i["id"]} if i["id"].endswith(part) else i for i in items]


SMALL = np.zeros((H, W), dtype=bool)
SMALL[2:10, 3:12] = True  # far from the blob


@pytest.mark.parametrize(
    ("edit", "box", "has_mask", "conflict"),
    [
        pytest.param(
            ("-box", _rect("x", Box(0, 0, 20, 12))),
            Box(0, 0, 20, 12),
            False,
            STALE_MASK,
            id="box-moved-mask-stale",
        ),
        pytest.param(
            ("-mask", _brush("x", SMALL)),
            Box(3, 2, 12, 10),
            True,
            STALE_BOX,
            id="mask-redrawn-box-stale",
        ),
    ],
)
def test_the_annotators_edit_wins_over_the_stale_shape(
    edit: tuple[str, dict[str, Any]], box: Box, has_mask: bool, conflict: str
) -> None:
    before = _predicted_pair()
    after = _edit(before, *edit)
    conflicts: Counter[str] = Counter()
    (obj,) = read_objects(after, (H, W), before={i["id"]: i for i in before}, conflicts=conflicts)
    assert obj.box.to_list() == pytest.approx(box.to_list(), abs=1e-9)
    assert (obj.mask is not None) is has_mask
    if has_mask:
        assert obj.mask == rle_encode(SMALL)
    assert conflicts == {conflict: 1}


def test_disagreeing_shapes_without_a_record_keep_the_box_and_count_it() -> None:
    after = _edit(_predicted_pair(), "-box", _rect("x", Box(0, 0, 20, 12)))
    conflicts: Counter[str] = Counter()
    (obj,) = read_objects(after, (H, W), conflicts=conflicts)
    assert obj.box.to_list() == pytest.approx([0, 0, 20, 12], abs=1e-9) and obj.mask is None
    assert conflicts == {UNRECORDED: 1}


def test_a_slightly_edited_box_that_agrees_keeps_its_mask_without_a_record() -> None:
    before = _predicted_pair()
    after = _edit(before, "-box", _rect("x", Box(28, 16, 72, 44)))
    conflicts: Counter[str] = Counter()
    (obj,) = read_objects(after, (H, W), conflicts=conflicts)
    assert obj.box.to_list() == pytest.approx([28, 16, 72, 44], abs=1e-9)
    assert obj.mask == rle_encode(_blob()) and conflicts == {}


def test_with_the_record_any_edit_of_the_box_alone_makes_the_mask_stale() -> None:
    before = _predicted_pair()
    after = _edit(before, "-box", _rect("x", Box(28, 16, 72, 44)))
    conflicts: Counter[str] = Counter()
    (obj,) = read_objects(after, (H, W), before=_by_id(before), conflicts=conflicts)
    assert obj.box.to_list() == pytest.approx([28, 16, 72, 44], abs=1e-9)
    assert obj.mask is None and conflicts == {STALE_MASK: 1}


def test_export_resolves_an_edited_box_against_the_tasks_prediction(tmp_path: Path) -> None:
    predicted = _predicted_pair()
    annotation = {"id": 9, "result": _edit(predicted, "-box", _rect("x", Box(0, 0, 20, 12)))}
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/a.png"},
        "annotations": [annotation],
        "predictions": [{"id": 4, "model_version": "v1", "result": predicted}],
    }
    paths = export([task], tmp_path, formats=("coco",))
    (ann,) = json.loads(paths["coco"].read_text())["annotations"]
    assert ann["bbox"] == pytest.approx([0, 0, 20, 12], abs=1e-9) and "segmentation" not in ann
    summary = json.loads(paths["summary"].read_text())
    assert summary["box_mask_conflicts"] == {STALE_MASK: 1}


# --- one object through edits: the annotator's latest shape wins, nothing stale is read ------


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in items}


def _tight_pair() -> list[dict[str, Any]]:
    """A box and mask of one object as the pipeline makes them: the box is the mask's box."""
    box = mask_to_box(_blob())
    assert box is not None
    region = Region(box, 0.8, "maskcut", rle_encode(_blob()))
    return prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), Target())["result"]


def _part(items: list[dict[str, Any]], part: str) -> dict[str, Any]:
    (item,) = [i for i in items if i["id"].endswith(part)]
    return item


def _without(items: list[dict[str, Any]], part: str) -> list[dict[str, Any]]:
    return [i for i in items if not i["id"].endswith(part)]


def _read(
    after: list[dict[str, Any]], before: list[dict[str, Any]] | None
) -> tuple[list[Any], Counter[str]]:
    conflicts: Counter[str] = Counter()
    record = _by_id(before) if before is not None else None
    return read_objects(after, (H, W), before=record, conflicts=conflicts), conflicts


def _blob_moved(dx: int) -> np.ndarray:
    return np.roll(_blob(), dx, axis=1)


def test_a_box_shrunk_by_30_percent_drops_its_stale_mask_though_they_still_overlap() -> None:
    predicted = _tight_pair()
    box = mask_to_box(_blob())
    assert box is not None
    shrunk = Box(box.x0, box.y0, box.x0 + 0.7 * box.width, box.y1)  # right edge dragged in
    assert box_iou(shrunk, box) == pytest.approx(0.7) and box_iou(shrunk, box) >= AGREE_IOU
    after = _edit(predicted, "-box", _rect("x", shrunk))
    (obj,), conflicts = _read(after, predicted)
    assert obj.box.to_list() == pytest.approx(shrunk.to_list(), abs=1e-9)
    assert obj.mask is None and conflicts == {STALE_MASK: 1}


def test_a_deleted_box_deletes_its_object() -> None:
    predicted = _tight_pair()
    objects, conflicts = _read(_without(predicted, "-box"), predicted)
    assert objects == [] and conflicts == {DELETED: 1}


def test_a_deleted_box_whose_mask_was_edited_leaves_the_mask_with_its_box() -> None:
    predicted = _tight_pair()
    after = _edit(_without(predicted, "-box"), "-mask", _brush("x", SMALL))
    (obj,), conflicts = _read(after, predicted)
    assert obj.mask == rle_encode(SMALL) and obj.box == mask_to_box(SMALL)
    assert conflicts == {MASK_KEPT: 1}


def test_a_deleted_mask_leaves_an_object_without_a_mask() -> None:
    predicted = _tight_pair()
    (obj,), conflicts = _read(_without(predicted, "-mask"), predicted)
    assert obj.box == mask_to_box(_blob()) and obj.mask is None and obj.label == "object"
    assert conflicts == {BOX_KEPT: 1}


def test_an_edited_mask_gives_its_own_box_even_when_the_old_box_still_agrees() -> None:
    predicted = _tight_pair()
    moved = _blob_moved(4)
    new_box = mask_to_box(moved)
    assert new_box is not None and box_iou(new_box, mask_to_box(_blob())) >= AGREE_IOU
    (obj,), conflicts = _read(_edit(predicted, "-mask", _brush("x", moved)), predicted)
    assert obj.box == new_box and obj.mask == rle_encode(moved)
    assert conflicts == {STALE_BOX: 1}


@pytest.mark.parametrize(
    ("box", "has_mask", "conflicts"),
    [
        pytest.param(Box(33, 17, 73, 43), True, {}, id="agree-both-kept"),
        pytest.param(Box(0, 0, 20, 12), False, {BOTH_EDITED: 1}, id="disagree-box-wins"),
    ],
)
def test_both_shapes_edited(box: Box, has_mask: bool, conflicts: dict[str, int]) -> None:
    predicted = _tight_pair()
    moved = _blob_moved(3)
    after = _edit(_edit(predicted, "-box", _rect("x", box)), "-mask", _brush("x", moved))
    (obj,), counted = _read(after, predicted)
    assert obj.box.to_list() == pytest.approx(box.to_list(), abs=1e-9)
    assert obj.mask == (rle_encode(moved) if has_mask else None) and counted == conflicts


def test_shapes_nobody_edited_stay_as_predicted_whatever_their_overlap() -> None:
    region = Region(Box(0, 0, 20, 12), 0.8, "cad", rle_encode(_blob()))  # a detector's pair
    predicted = prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), Target())["result"]
    (obj,), conflicts = _read(predicted, predicted)
    assert obj.box.to_list() == pytest.approx([0, 0, 20, 12]) and obj.mask == rle_encode(_blob())
    assert conflicts == {}
    (unrecorded,), conflicts = _read(predicted, None)
    assert unrecorded.mask is None and conflicts == {UNRECORDED: 1}


def test_a_label_changed_on_one_shape_wins_over_the_other_shapes() -> None:
    predicted = _tight_pair()
    relabelled = copy.deepcopy(_part(predicted, "-mask"))
    relabelled["value"]["brushlabels"] = ["dog"]
    (obj,), _ = _read(_edit(predicted, "-mask", relabelled), predicted)
    assert obj.label == "dog"
    (unchanged,), _ = _read(predicted, predicted)
    assert unchanged.label == "object"


def test_an_object_sent_as_its_mask_alone_is_read_accepted_edited_and_deleted() -> None:
    box = mask_to_box(_blob())
    assert box is not None
    region = Region(box, 0.8, "maskcut", rle_encode(_blob()))
    one = Target(shapes="mask")
    (item,) = prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), one)["result"]
    assert item["type"] == "brushlabels"
    (obj,), conflicts = _read([item], [item])
    assert (obj.box, obj.mask, obj.score) == (box, rle_encode(_blob()), pytest.approx(0.8))
    (edited,), _ = _read(_edit([item], "-mask", _brush("x", SMALL)), [item])
    assert (edited.box, edited.mask) == (mask_to_box(SMALL), rle_encode(SMALL))
    assert _read([], [item]) == ([], Counter()) and conflicts == {}


def test_export_leaves_out_a_deleted_box_and_a_stale_mask(tmp_path: Path) -> None:
    first, second = (mask_to_box(m) for m in (_blob(), SMALL))
    assert first is not None and second is not None
    regions = [Region(first, 0.8, "maskcut", rle_encode(_blob()))]
    regions.append(Region(second, 0.6, "maskcut", rle_encode(SMALL)))
    predicted = prediction(DiscoveryResult("a.png", (H, W), regions, "v1"), Target())["result"]
    shrunk = Box(first.x0, first.y0, first.x0 + 0.7 * first.width, first.y1)
    annotated = _edit(predicted, "0-box", _rect("x", shrunk))
    annotated = [i for i in annotated if not i["id"].endswith("1-box")]  # second one deleted
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/a.png"},
        "annotations": [{"id": 9, "result": annotated, "parent_prediction": 4}],
        "predictions": [{"id": 4, "model_version": "v1", "result": predicted}],
    }
    paths = export([task], tmp_path, formats=("coco",))
    (ann,) = json.loads(paths["coco"].read_text())["annotations"]
    assert ann["bbox"] == pytest.approx([shrunk.x0, shrunk.y0, shrunk.width, shrunk.height])
    assert "segmentation" not in ann
    summary = json.loads(paths["summary"].read_text())
    assert summary["box_mask_conflicts"] == {STALE_MASK: 1, DELETED: 1}


def test_predictions_are_exported_as_made(tmp_path: Path) -> None:
    region = Region(Box(0, 0, 20, 12), 0.8, "cad", rle_encode(_blob()))  # box and mask disagree
    predicted = prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), Target())["result"]
    task = {"id": 1, "data": {"image": "a.png"}, "predictions": [{"result": predicted}]}
    ds = read_ls_export([task], source="predictions")
    (obj,) = ds.images[0].objects
    assert obj.mask == rle_encode(_blob()) and obj.box.to_list() == pytest.approx([0, 0, 20, 12])
    assert ds.box_mask_conflicts == {}


def test_clustering_crops_a_mask_only_object_at_its_tight_box_and_relabels_its_brush() -> None:
    box = mask_to_box(_blob())
    assert box is not None
    region = Region(box, 0.8, "maskcut", rle_encode(_blob()))
    one = Target(shapes="mask")
    result = prediction(DiscoveryResult("a.png", (H, W), [region], "v1"), one)["result"]
    task = {"id": 1, "data": {"image": "/data/upload/1/a.png"}, "predictions": [{"result": result}]}
    assert _clustering_crops(task) == [box]
    (relabelled,) = relabel(result, {object_id("v1", 0): "cluster_03"})
    assert relabelled["value"]["brushlabels"] == ["cluster_03"]
