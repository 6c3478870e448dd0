"""Label Studio export -> COCO / YOLO / VOC: masks and boxes come back through each format.

Images are 37 x 53 (height x width, and the transpose): a swapped width/height shows up as a
wrong shape or a box outside the image. Tolerances: COCO boxes and masks are exact (up to the
float error of LS percentages); YOLO boxes within 1e-6 px (10 significant digits written);
VOC boxes are whole pixels, exact for whole-pixel boxes and within 0.5 px otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from zerolabel.contract import Box, DiscoveryResult, Region
from zerolabel.evaluation.ground_truth import read_voc, read_yolo
from zerolabel.formats.export import (
    SIZE_FROM_TASK,
    Dataset,
    detect_image_key,
    export,
    file_name_from_url,
    read_ls_export,
    to_coco,
    write_voc,
    write_yolo,
)
from zerolabel.geometry import mask_to_box, rle_decode, rle_encode
from zerolabel.labelstudio.brush import brush_rle_encode
from zerolabel.labelstudio.tasks import Target, prediction

H, W = 37, 53


def _blob(hw: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    mask[rows, cols] = True
    mask[rows.start, cols.start] = False  # not a plain rectangle
    return mask


MASK_A = _blob((H, W), slice(2, 12), slice(5, 40))
MASK_B = _blob((H, W), slice(20, 37), slice(40, 53))  # touches the bottom-right corner
TALL_MASK = _blob((W, H), slice(30, 50), slice(1, 9))  # an image taller than wide
FLOAT_BOX = Box(5.4, 3.25, 20.75, 30.0)  # no edge on a half pixel: VOC rounding is unambiguous


def _envelope(region_id: str, kind: str, hw: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": region_id,
        "from_name": "label" if kind.startswith("rect") else "mask",
        "to_name": "image",
        "type": kind,
        "original_width": hw[1],
        "original_height": hw[0],
        "image_rotation": 0,
    }


def _brush(region_id: str, mask: np.ndarray, label: str = "object") -> dict[str, Any]:
    value = {"format": "rle", "rle": brush_rle_encode(mask), "brushlabels": [label]}
    return _envelope(region_id, "brushlabels", (mask.shape[0], mask.shape[1])) | {"value": value}


def _rect(
    region_id: str,
    box: Box,
    label: str = "object",
    hw: tuple[int, int] = (H, W),
    rotation: float = 0.0,
) -> dict[str, Any]:
    h, w = hw
    value = {
        "x": 100 * box.x0 / w,
        "y": 100 * box.y0 / h,
        "width": 100 * box.width / w,
        "height": 100 * box.height / h,
        "rotation": rotation,
        "rectanglelabels": [label],
    }
    return _envelope(region_id, "rectanglelabels", hw) | {"value": value}


def _annotation(result: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": 1, "result": result, "was_cancelled": False} | extra


def _task(
    task_id: int, url: str, result: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    annotations = [_annotation(result)] if result is not None else []
    task = {"id": task_id, "data": {"image": url}, "annotations": annotations, "predictions": []}
    return task | extra


def _export() -> list[dict[str, Any]]:
    """Two labelled images (wide and tall) and one image annotated as empty but sized."""
    return [
        _task(
            1,
            "/data/upload/3/abcd1234-wide.png",
            [_brush("a1", MASK_A, "dog"), _brush("a2", MASK_B, "cat"), _rect("a3", FLOAT_BOX)],
        ),
        _task(2, "/data/local-files/?d=tall.png", [_brush("b1", TALL_MASK, "dog")]),
    ]


def _load_coco(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = json.loads(json.dumps(copy.deepcopy(data)))  # JSON-ready, as written
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _approx_box(box: Box, tol: float = 1e-9) -> Any:
    return pytest.approx(box.to_list(), abs=tol)


# --- COCO ----------------------------------------------------------------------------------


def test_brush_masks_come_back_from_coco_rle_unchanged() -> None:
    coco = _load_coco(to_coco(read_ls_export(_export()), class_agnostic=True))
    anns = coco.loadAnns(coco.getAnnIds())
    masked = [a for a in anns if "segmentation" in a]
    for ann, expected in zip(masked, [MASK_A, MASK_B, TALL_MASK], strict=True):
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        box = mask_to_box(expected)
        assert box is not None
        assert ann["bbox"] == [box.x0, box.y0, box.width, box.height]
        assert ann["area"] == expected.sum() and ann["iscrowd"] == 0


def test_coco_sizes_are_width_and_height_not_swapped() -> None:
    data = to_coco(read_ls_export(_export()), class_agnostic=True)
    wide, tall = data["images"]
    assert (wide["width"], wide["height"]) == (W, H)
    assert (tall["width"], tall["height"]) == (H, W)
    assert wide["file_name"] == "abcd1234-wide.png" and wide["ls_task_id"] == 1
    sizes = [a["segmentation"]["size"] for a in data["annotations"] if "segmentation" in a]
    assert sizes == [[H, W], [H, W], [W, H]]


def test_rectangles_keep_float_boxes_and_area() -> None:
    data = to_coco(read_ls_export(_export()), class_agnostic=True)
    (ann,) = [a for a in data["annotations"] if "segmentation" not in a]
    box = [FLOAT_BOX.x0, FLOAT_BOX.y0, FLOAT_BOX.width, FLOAT_BOX.height]
    assert ann["bbox"] == pytest.approx(box, abs=1e-9)
    assert ann["area"] == pytest.approx(FLOAT_BOX.width * FLOAT_BOX.height)


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        pytest.param(0.0, Box(30, 5, 40, 13), id="upright"),
        pytest.param(90.0, Box(22, 5, 30, 15), id="quarter-turn-clockwise"),
        pytest.param(180.0, Box(20, 0, 30, 5), id="half-turn-clipped-to-image"),
        pytest.param(-90.0, Box(30, 0, 38, 5), id="quarter-turn-back-clipped"),
    ],
)
def test_rotated_rectangle_becomes_its_axis_aligned_bounds(rotation: float, expected: Box) -> None:
    # LS turns the box clockwise (y down) about its top-left corner (x, y) = (30, 5)
    task = _task(1, "/data/upload/1/a.png", [_rect("r", Box(30, 5, 40, 13), rotation=rotation)])
    (image,) = read_ls_export([task]).images
    assert image.objects[0].box.to_list() == _approx_box(expected)


@pytest.mark.parametrize(
    ("class_agnostic", "names"),
    [
        pytest.param(True, ["object"], id="class-agnostic"),
        pytest.param(False, ["cat", "dog", "object"], id="labelled"),
    ],
)
def test_categories_are_one_class_or_sorted_labels(class_agnostic: bool, names: list[str]) -> None:
    data = to_coco(read_ls_export(_export()), class_agnostic=class_agnostic)
    assert [c["name"] for c in data["categories"]] == names
    assert [c["id"] for c in data["categories"]] == list(range(1, len(names) + 1))
    by_id = {c["id"]: c["name"] for c in data["categories"]}
    got = [by_id[a["category_id"]] for a in data["annotations"]]
    labelled = ["dog", "cat", "object", "dog"]  # brush, brush, rectangle; then the tall image
    assert got == (labelled if not class_agnostic else ["object"] * 4)


# --- YOLO and VOC read back with our ground-truth readers -----------------------------------


def _boxes(ds: Dataset) -> dict[str, list[Box]]:
    return {Path(im.file_name).stem: [o.box for o in im.objects] for im in ds.images}


def _write_images(ds: Dataset, folder: Path) -> None:
    folder.mkdir(parents=True)
    for im in ds.images:
        Image.new("RGB", (im.width, im.height)).save(folder / Path(im.file_name).name)


@pytest.mark.parametrize("class_agnostic", [True, False], ids=["class-agnostic", "labelled"])
def test_yolo_labels_read_back_to_the_same_boxes(tmp_path: Path, class_agnostic: bool) -> None:
    ds = read_ls_export(_export())
    names = write_yolo(ds, tmp_path, class_agnostic=class_agnostic)
    _write_images(ds, tmp_path / "images")
    gt = read_yolo(tmp_path / "labels")
    assert gt["abcd1234-wide"].image_hw == (H, W) and gt["tall"].image_hw == (W, H)
    for stem, boxes in _boxes(ds).items():
        for got, expected in zip(gt[stem].boxes, boxes, strict=True):
            assert got.to_list() == _approx_box(expected, 1e-6)
    labels = [o.label for im in ds.images for o in im.objects]
    read_labels = [label for stem in ("abcd1234-wide", "tall") for label in gt[stem].labels]
    assert read_labels == (["object"] * 4 if class_agnostic else labels)
    assert (tmp_path / "labels" / "classes.txt").read_text().split() == names


def test_voc_annotations_read_back_to_whole_pixel_boxes(tmp_path: Path) -> None:
    ds = read_ls_export(_export())
    write_voc(ds, tmp_path, class_agnostic=False)
    gt = read_voc(tmp_path)
    assert gt["abcd1234-wide"].image_hw == (H, W) and gt["tall"].image_hw == (W, H)
    for stem, boxes in _boxes(ds).items():
        for got, expected in zip(gt[stem].boxes, boxes, strict=True):
            whole = all(float(v).is_integer() for v in expected.to_list())
            assert got.to_list() == _approx_box(expected, 0.0 if whole else 0.5)
    assert gt["abcd1234-wide"].labels == ["dog", "cat", "object"]
    # FLOAT_BOX (5.4, 3.25, 20.75, 30) rounds to whole pixels (5, 3, 21, 30)
    assert gt["abcd1234-wide"].boxes[2] == Box(5, 3, 21, 30)
    split = (tmp_path / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    assert split == ["abcd1234-wide", "tall"]


# --- which annotation or prediction ----------------------------------------------------------


def _labelled(label: str, **extra: Any) -> dict[str, Any]:
    return _annotation([_rect("r", Box(1, 1, 9, 9), label)], **extra)


@pytest.mark.parametrize(
    ("annotations", "chosen"),
    [
        pytest.param(
            [_labelled("a", updated_at="2024-05-01T10:00:00Z"), _labelled("b", was_cancelled=True)],
            "a",
            id="cancelled-ignored",
        ),
        pytest.param(
            [
                _labelled("new", updated_at="2024-05-02T08:00:00.123456Z"),
                _labelled("old", updated_at="2024-05-01T23:00:00+00:00"),
            ],
            "new",
            id="latest-updated-at-not-list-order",
        ),
        pytest.param(
            [_labelled("a", created_at="2024-05-02T00:00:00"), _labelled("b", created_at="2024")],
            "b",
            id="unparsable-timestamp-falls-back-to-list-order",
        ),
        pytest.param([_labelled("a"), _labelled("b")], "b", id="no-timestamps-last-in-list"),
    ],
)
def test_latest_live_annotation_is_exported(annotations: list[Any], chosen: str) -> None:
    task = {"id": 7, "data": {"image": "/data/upload/1/x.png"}, "annotations": annotations}
    (image,) = read_ls_export([task]).images
    assert [o.label for o in image.objects] == [chosen]


def _discovery(version: str, masks: list[np.ndarray]) -> dict[str, Any]:
    regions = []
    for i, mask in enumerate(masks):
        box = mask_to_box(mask)
        assert box is not None
        regions.append(Region(box, 0.5 + 0.1 * i, "maskcut", rle_encode(mask)))
    result = DiscoveryResult("x.png", (H, W), regions, model_version=version)
    return prediction(result, Target()) | {"created_at": f"2024-05-0{len(masks)}T00:00:00Z"}


@pytest.mark.parametrize(
    ("model_version", "masks"),
    [
        pytest.param("v1", [MASK_A], id="v1"),
        pytest.param("v2", [MASK_B, MASK_A], id="v2"),
        pytest.param(None, [MASK_B, MASK_A], id="latest"),
    ],
)
def test_predictions_of_a_model_version_merge_our_box_and_mask(
    model_version: str | None, masks: list[np.ndarray]
) -> None:
    preds = [_discovery("v2", [MASK_B, MASK_A]), _discovery("v1", [MASK_A])]
    task = {"id": 3, "data": {"image": "/data/upload/1/x.png"}, "predictions": preds}
    ds = read_ls_export([task], source="predictions", model_version=model_version)
    objects = ds.images[0].objects
    assert len(objects) == len(masks)  # one object per zl-...-box / zl-...-mask pair
    for i, (obj, mask) in enumerate(zip(objects, masks, strict=True)):
        assert obj.mask is not None
        np.testing.assert_array_equal(rle_decode(obj.mask), mask)
        box = mask_to_box(mask)
        assert box is not None and obj.box.to_list() == _approx_box(box)
        assert obj.score == pytest.approx(0.5 + 0.1 * i)


def test_missing_model_version_skips_the_task() -> None:
    task = {"id": 3, "data": {"image": "/data/upload/1/x.png"}, "predictions": []}
    task["predictions"] = [_discovery("v1", [MASK_A])]
    ds = read_ls_export([task], source="predictions", model_version="v9")
    assert ds.images == [] and "model_version 'v9'" in ds.skipped[0].reason


def test_regions_merge_only_when_they_are_one_object() -> None:
    result = [
        _rect("zl-abc123-0-box", Box(4, 1, 41, 13), "dog"),  # annotator widened our box
        _brush("zl-abc123-0-mask", MASK_A),
        _rect("Xy7_aQ", Box(0, 0, 10, 10), "cat"),  # drawn in LS: its own object
        _brush("p9Lm2k", MASK_B, "cat"),
        {**_rect("same", Box(1, 2, 3, 4)), "type": "rectangle"},  # <Rectangle> + <Labels>
        {"id": "same", "type": "labels", "value": {"labels": ["bird"]}},
        {"id": "q", "type": "choices", "value": {"choices": ["blurry"]}},
    ]
    ds = read_ls_export([_task(1, "/data/upload/1/a.png", result)])
    objects = ds.images[0].objects
    assert [o.label for o in objects] == ["dog", "cat", "cat", "bird"]
    assert objects[0].box.to_list() == _approx_box(Box(4, 1, 41, 13))
    assert objects[0].mask is not None
    np.testing.assert_array_equal(rle_decode(objects[0].mask), MASK_A)
    assert [o.mask is not None for o in objects] == [True, False, True, False]
    assert ds.dropped_regions == {"unsupported result type 'choices'": 1}


# --- skipping and file names --------------------------------------------------------------


def test_tasks_without_image_or_size_are_skipped_and_reported(tmp_path: Path) -> None:
    rotated = _rect("r", Box(1, 1, 5, 5)) | {"image_rotation": 90}
    tasks = [
        *_export(),
        _task(10, "/data/upload/1/empty.png", []),  # no region, so no size
        {"id": 11, "data": {"text": "no image"}, "annotations": [_labelled("a")]},
        _task(12, "/data/upload/1/r.png", [rotated]),
        _task(13, "/data/upload/1/none.png"),
        _task(14, "/data/upload/1/c.png", annotations=[_labelled("a", was_cancelled=True)]),
    ]
    paths = export(tasks, tmp_path)
    summary = json.loads(paths["summary"].read_text())
    reasons = {s["task_id"]: s["reason"] for s in summary["skipped_tasks"]}
    assert sorted(reasons) == [10, 11, 12, 13, 14]
    assert "no size info" in reasons[10] and "data['image']" in reasons[11]
    assert "image_rotation" in reasons[12] and reasons[13] == "no annotation"
    assert reasons[14] == "all annotations cancelled"
    assert (summary["images"], summary["objects"], summary["masks"]) == (2, 4, 3)


@pytest.mark.parametrize(
    ("url", "file_name"),
    [
        pytest.param("/data/upload/3/abcd1234-x.jpg", "abcd1234-x.jpg", id="upload"),
        pytest.param("/data/local-files/?d=a/b.jpg", "a/b.jpg", id="local-files"),
        pytest.param("/data/local-files/?d=set%201/im%2B1.png", "set 1/im+1.png", id="quoted"),
        pytest.param("http://h:8080/data/local-files/?d=../x/./y.png", "x/y.png", id="no-escape"),
        pytest.param("https://cdn.example.com/i/my%20cat.jpg?sig=1", "my cat.jpg", id="http"),
        pytest.param("s3://bucket/path/z.png", "z.png", id="s3"),
    ],
)
def test_file_name_comes_from_the_image_url(url: str, file_name: str) -> None:
    assert file_name_from_url(url) == file_name


def test_local_files_folders_are_kept_in_label_paths(tmp_path: Path) -> None:
    tasks = [
        _task(1, "/data/local-files/?d=cam1/0001.jpg", [_brush("m", MASK_A)]),
        _task(2, "/data/local-files/?d=cam2/0001.jpg", [_brush("m", MASK_B)]),
    ]
    paths = export(tasks, tmp_path, formats=("yolo", "voc"))
    assert (paths["yolo"] / "labels" / "cam2" / "0001.txt").read_text().startswith("0 ")
    assert (paths["voc"] / "Annotations" / "cam1" / "0001.xml").is_file()
    assert sorted(paths) == ["summary", "voc", "yolo"]


def test_clashing_label_files_fail_before_writing(tmp_path: Path) -> None:
    tasks = [_task(i, f"https://h/{i}/same.jpg", [_brush("m", MASK_A)]) for i in (1, 2)]
    with pytest.raises(ValueError, match="would share the label file 'same'"):
        export(tasks, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_arguments_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown export formats"):
        export(_export(), tmp_path, formats=("coco", "pascal"))
    with pytest.raises(ValueError, match="source='predictions'"):
        read_ls_export(_export(), model_version="v1")
    with pytest.raises(ValueError, match="source"):
        read_ls_export(_export(), source="drafts")
    with pytest.raises(TypeError, match="list of tasks"):
        read_ls_export({"tasks": []})  # type: ignore[arg-type]


def test_image_key_is_detected_from_the_first_task() -> None:
    task = {"id": 1, "data": {"caption": "a dog", "photo": "/data/upload/1/p.png"}}
    assert detect_image_key([task]) == "photo"
    both = {"id": 1, "data": {"a": "/data/upload/1/p.png", "b": "/data/upload/1/q.png"}}
    with pytest.raises(ValueError, match="image_key="):
        detect_image_key([both])


def test_predictions_listed_by_id_only_are_explained() -> None:
    task = {"id": 4, "data": {"image": "/data/upload/1/y.png"}, "predictions": [17, 18]}
    ds = read_ls_export([task], source="predictions")
    assert ds.images == [] and "by id only" in ds.skipped[0].reason


# --- negatives: an annotation with an empty result ("no objects here") ------------------------


def _negative_task(task_id: int, url: str, predicted: list[dict[str, Any]]) -> dict[str, Any]:
    task = _task(task_id, url, [])
    return task | {"predictions": [{"id": 5, "model_version": "v1", "result": predicted}]}


def test_a_negative_is_kept_in_every_format_sized_from_its_prediction(tmp_path: Path) -> None:
    # the model saw something, the annotator deleted it: the prediction gives the size
    tasks = [*_export(), _negative_task(3, "/data/upload/3/empty.png", [_rect("p", FLOAT_BOX)])]
    paths = export(tasks, tmp_path)
    coco = json.loads(paths["coco"].read_text())
    (image,) = [im for im in coco["images"] if im["ls_task_id"] == 3]
    assert (image["width"], image["height"]) == (W, H)
    assert not [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert (paths["yolo"] / "labels" / "empty.txt").read_text() == ""
    gt = read_voc(paths["voc"])
    assert gt["empty"].boxes == [] and gt["empty"].image_hw == (H, W)
    summary = json.loads(paths["summary"].read_text())
    assert (summary["images"], summary["negatives"], summary["skipped_tasks"]) == (3, 1, [])
    assert summary["sized_from"] == {SIZE_FROM_TASK: [3]}


def test_a_negative_without_any_sized_result_is_sized_from_its_image() -> None:
    asked: list[str] = []

    def image_size(url: str) -> tuple[tuple[int, int], str] | None:
        asked.append(url)
        return ((W, H), "image file") if url.endswith("a.png") else None

    tasks = [_task(10, "/data/upload/1/a.png", []), _task(11, "/data/upload/1/b.png", [])]
    ds = read_ls_export(tasks, image_size=image_size)
    (image,) = ds.images
    assert (image.task_id, image.width, image.height, image.objects) == (10, H, W, [])
    assert image.size_from == "image file"
    assert asked == ["/data/upload/1/a.png", "/data/upload/1/b.png"]
    assert [s.task_id for s in ds.skipped] == [11] and "no size info" in ds.skipped[0].reason


def test_exporting_an_unknown_model_version_is_refused_with_the_versions_present(
    tmp_path: Path,
) -> None:
    task = {"id": 3, "data": {"image": "/data/upload/1/x.png"}}
    task["predictions"] = [_discovery("v1", [MASK_A]), _discovery("v2", [MASK_B])]
    with pytest.raises(ValueError, match="model version 'nope' not found.*'v1', 'v2'"):
        export([task], tmp_path / "out", source="predictions", model_version="nope")
    assert not (tmp_path / "out").exists()
