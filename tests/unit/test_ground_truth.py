"""Ground-truth readers: VOC (LOST shift), COCO JSON, YOLO labels and format detection."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import (
    GtImage,
    image_hw,
    match_ground_truth,
    read_coco,
    read_ground_truth,
    read_voc,
    read_yolo,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VOC = EXAMPLES / "voc2007"
COCO8 = EXAMPLES / "coco8"


def _raw_voc_objects(xml_path: Path) -> list[tuple[str, list[float]]]:
    """(name, [xmin, ymin, xmax, ymax]) exactly as the XML writes them."""
    root = ET.parse(xml_path).getroot()
    return [
        (
            obj.findtext("name", ""),
            [float(obj.findtext(f"bndbox/{t}", "")) for t in ("xmin", "ymin", "xmax", "ymax")],
        )
        for obj in root.iter("object")
    ]


def _nonempty_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------- VOC


def test_voc_000001_has_a_dog_and_a_person() -> None:
    gt = read_voc(VOC / "Annotations")
    assert sorted(gt["000001"].labels) == ["dog", "person"]
    assert gt["000001"].file_name == "000001.jpg"


def test_voc_boxes_are_shifted_to_zero_based_exclusive() -> None:
    gt = read_voc(VOC / "Annotations")
    for xml_path in sorted((VOC / "Annotations").glob("*.xml")):
        raw = _raw_voc_objects(xml_path)
        image = gt[xml_path.stem]
        assert image.labels == [name for name, _ in raw]
        for box, (_, (xmin, ymin, xmax, ymax)) in zip(image.boxes, raw, strict=True):
            assert box == Box(xmin - 1, ymin - 1, xmax, ymax)


def test_voc_keeps_difficult_and_truncated_objects() -> None:
    gt = read_voc(VOC / "Annotations")
    difficult = 0
    for xml_path in sorted((VOC / "Annotations").glob("*.xml")):
        root = ET.parse(xml_path).getroot()
        objects = list(root.iter("object"))
        difficult += sum(o.findtext("difficult") == "1" for o in objects)
        assert len(gt[xml_path.stem].boxes) == len(objects)
    assert difficult > 0  # the examples do exercise the case


def test_voc_image_size_comes_from_the_xml() -> None:
    gt = read_voc(VOC / "Annotations")
    for xml_path in (VOC / "Annotations").glob("*.xml"):
        root = ET.parse(xml_path).getroot()
        expected = (int(root.findtext("size/height", "")), int(root.findtext("size/width", "")))
        assert gt[xml_path.stem].image_hw == expected


def test_voc_devkit_folder_reads_like_its_annotations_folder() -> None:
    assert read_voc(VOC) == read_voc(VOC / "Annotations")


def test_voc_split_restricts_to_listed_ids(tmp_path: Path) -> None:
    shutil.copytree(VOC / "Annotations", tmp_path / "Annotations")
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n000005\n")
    gt = read_voc(tmp_path, split="trainval")
    assert sorted(gt) == ["000001", "000005"]
    with pytest.raises(ValueError, match="test.txt"):
        read_voc(tmp_path, split="test")


def test_voc_without_size_reads_the_image(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    shutil.copytree(VOC / "JPEGImages", tmp_path / "JPEGImages")
    tree = ET.parse(VOC / "Annotations" / "000001.xml")
    size = tree.getroot().find("size")
    assert size is not None
    tree.getroot().remove(size)
    tree.write(tmp_path / "Annotations" / "000001.xml")
    gt = read_voc(tmp_path)
    assert gt["000001"].image_hw == image_hw(VOC / "JPEGImages" / "000001.jpg")


def test_voc_malformed_xml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="broken.xml"):
        read_voc(tmp_path)


# ---------------------------------------------------------------------------------- YOLO


def test_yolo_counts_equal_label_lines_and_boxes_lie_inside_images() -> None:
    gt = read_yolo(COCO8 / "labels", COCO8 / "images")
    label_files = sorted((COCO8 / "labels").glob("*.txt"))
    assert sorted(gt) == [p.stem for p in label_files]
    for txt in label_files:
        image = gt[txt.stem]
        h, w = image.image_hw
        assert len(image.boxes) == len(_nonempty_lines(txt))
        for box in image.boxes:
            assert 0 <= box.x0 < box.x1 <= w
            assert 0 <= box.y0 < box.y1 <= h


def test_yolo_sizes_come_from_the_images_and_boxes_scale_by_them() -> None:
    gt = read_yolo(COCO8 / "labels")  # default: the sibling images/ folder
    for txt in sorted((COCO8 / "labels").glob("*.txt")):
        with Image.open(COCO8 / "images" / f"{txt.stem}.jpg") as img:
            w, h = img.size
        image = gt[txt.stem]
        assert image.image_hw == (h, w)
        for line, box, label in zip(_nonempty_lines(txt), image.boxes, image.labels, strict=True):
            cls, cx, cy, bw, bh = line.split()
            assert label == str(int(cls))
            x0, x1 = (float(cx) - float(bw) / 2) * w, (float(cx) + float(bw) / 2) * w
            y0, y1 = (float(cy) - float(bh) / 2) * h, (float(cy) + float(bh) / 2) * h
            expected = [min(max(v, 0.0), size) for v, size in ((x0, w), (y0, h), (x1, w), (y1, h))]
            assert box.to_list() == pytest.approx(expected)


def test_yolo_class_names_from_argument_or_classes_txt(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "a.png")
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.5 0.5\n")
    assert read_yolo(tmp_path / "labels", names=["cat", "dog"])["a"].labels == ["dog", "cat"]
    assert read_yolo(tmp_path / "labels", names={1: "dog"})["a"].labels == ["dog", "0"]
    (tmp_path / "labels" / "classes.txt").write_text("cat\ndog\n")
    gt = read_yolo(tmp_path / "labels")
    assert sorted(gt) == ["a"]  # classes.txt is not a label file
    assert gt["a"].labels == ["dog", "cat"]
    assert gt["a"].boxes[0] == Box(10.0, 5.0, 30.0, 15.0)


def test_yolo_exif_rotation_swaps_the_size(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "r.jpg", exif=exif)
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 1 1\n")
    image = read_yolo(tmp_path / "labels")["r"]
    assert image.image_hw == (40, 20)
    assert image.boxes[0] == Box(0.0, 0.0, 20.0, 40.0)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("0 0.5 0.5\n", id="too-few-values"),
        pytest.param("cat 0.5 0.5 0.1 0.1\n", id="not-a-number"),
    ],
)
def test_yolo_malformed_line_names_file_and_line(tmp_path: Path, content: str) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    (tmp_path / "x.txt").write_text(content)
    with pytest.raises(ValueError, match=r"x\.txt:1"):
        read_yolo(tmp_path, tmp_path)


def test_yolo_missing_image_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match="no image x"):
        read_yolo(tmp_path, tmp_path)


# ---------------------------------------------------------------------------------- COCO


def _write_coco(path: Path) -> dict:
    data = {
        "images": [
            {"id": 7, "file_name": "train/a.jpg", "height": 100, "width": 200},
            {"id": 9, "file_name": "b.jpg", "height": 50, "width": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [10, 20, 30, 40], "category_id": 3, "iscrowd": 0},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 200, 100], "category_id": 3, "iscrowd": 1},
            {"id": 3, "image_id": 9, "bbox": [1.5, 2.5, 3, 4], "category_id": 5},
        ],
        "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "bird"}],
    }
    path.write_text(json.dumps(data))
    return data


def test_coco_json_round_trips_without_crowd_boxes(tmp_path: Path) -> None:
    data = _write_coco(tmp_path / "instances.json")
    gt = read_coco(tmp_path / "instances.json")
    assert sorted(gt) == ["a", "b"]
    non_crowd = [a for a in data["annotations"] if not a.get("iscrowd", 0)]
    by_id = {im["id"]: im for im in data["images"]}
    names = {c["id"]: c["name"] for c in data["categories"]}
    for ann in non_crowd:
        im = by_id[ann["image_id"]]
        image = gt[Path(im["file_name"]).stem]
        assert image.file_name == im["file_name"]
        assert image.image_hw == (im["height"], im["width"])
        x, y, w, h = ann["bbox"]
        assert Box(x, y, x + w, y + h) in image.boxes
        assert names[ann["category_id"]] in image.labels
    assert sum(len(g.boxes) for g in gt.values()) == len(non_crowd)


def test_coco_duplicate_stems_are_rejected(tmp_path: Path) -> None:
    images = [
        {"id": i, "file_name": f"{d}/a.jpg", "height": 1, "width": 1}
        for i, d in [(1, "x"), (2, "y")]
    ]
    (tmp_path / "dup.json").write_text(json.dumps({"images": images, "annotations": []}))
    with pytest.raises(ValueError, match="'a'"):
        read_coco(tmp_path / "dup.json")


def test_gt_image_rejects_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        GtImage("a.jpg", (1, 1), [Box(0, 0, 1, 1)], [])


# ---------------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("relative", "reader"),
    [
        pytest.param("voc2007", lambda: read_voc(VOC), id="vocdevkit"),
        pytest.param("voc2007/Annotations", lambda: read_voc(VOC), id="voc-xml-folder"),
        pytest.param("coco8/labels", lambda: read_yolo(COCO8 / "labels"), id="yolo-labels"),
        pytest.param("coco8", lambda: read_yolo(COCO8 / "labels"), id="yolo-dataset"),
    ],
)
def test_auto_detection_on_examples(relative: str, reader) -> None:
    assert read_ground_truth(EXAMPLES / relative) == reader()


def test_auto_detection_of_coco_json(tmp_path: Path) -> None:
    _write_coco(tmp_path / "gt.json")
    assert read_ground_truth(tmp_path / "gt.json") == read_coco(tmp_path / "gt.json")


def test_explicit_format_and_images_dir(tmp_path: Path) -> None:
    gt = read_ground_truth(COCO8 / "labels", fmt="yolo", images_dir=COCO8 / "images")
    assert gt == read_yolo(COCO8 / "labels", COCO8 / "images")


@pytest.mark.parametrize(
    ("make", "fmt", "message"),
    [
        pytest.param(lambda p: p / "nowhere", "auto", "does not exist", id="missing"),
        pytest.param(lambda p: p, "auto", "expected VOC", id="empty-folder"),
        pytest.param(lambda p: p, "pascal", "not one of", id="unknown-format"),
        pytest.param(lambda p: _touch(p / "gt.csv"), "auto", "expected a COCO", id="csv-file"),
        pytest.param(lambda p: _touch(p / "gt.json"), "auto", "cannot read JSON", id="bad-json"),
        pytest.param(lambda p: p, "voc", "expected VOC .xml", id="voc-without-xml"),
        pytest.param(lambda p: p, "yolo", "expected YOLO", id="yolo-without-txt"),
    ],
)
def test_errors_name_the_path(tmp_path: Path, make, fmt: str, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as info:
        read_ground_truth(path, fmt=fmt)
    if fmt != "pascal":
        assert str(path) in str(info.value)


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def _yolo_folder(root: Path, labels: dict[str, str], images: list[str]) -> Path:
    (root / "labels").mkdir(parents=True)
    (root / "images").mkdir()
    for stem, text in labels.items():
        (root / "labels" / f"{stem}.txt").write_text(text)
    for stem in images:
        Image.new("RGB", (40, 20)).save(root / "images" / f"{stem}.png")
    return root / "labels"


def test_yolo_label_without_image_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = _yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n", "lost": "0 0.5 0.5 1 1\n"}, ["a"])
    with caplog.at_level("WARNING"):
        gt = read_yolo(labels)
    assert sorted(gt) == ["a"] and len(gt["a"].boxes) == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "1 YOLO label file(s) without an image skipped" in warning and "lost.txt" in warning


def test_yolo_image_without_label_file_is_a_negative(tmp_path: Path) -> None:
    labels = _yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, ["a", "empty"])
    gt = read_yolo(labels)
    assert sorted(gt) == ["a", "empty"]
    assert gt["empty"] == GtImage("empty.png", (20, 40), [], [])


def test_yolo_predictions_on_an_unlabelled_image_are_false_positives(tmp_path: Path) -> None:
    from zerolabel.evaluation.metrics import evaluate

    labels = _yolo_folder(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, ["a", "empty"])
    images = [{"id": i, "file_name": f"{s}.png"} for i, s in ((1, "a"), (2, "empty"))]
    hit = {"image_id": 1, "bbox": [10, 5, 20, 10], "score": 0.5}
    false = {"image_id": 2, "bbox": [0, 0, 20, 10], "score": 0.9}
    scores = {}
    for name, anns in (("clean", [hit]), ("with-fp", [hit, false])):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"images": images, "annotations": anns}))
        scores[name] = evaluate(path, labels, "yolo").ap50
    assert scores["clean"] == pytest.approx(1.0) and scores["with-fp"] < 0.9


def test_yolo_split_folders_pair_labels_with_images_of_the_same_split(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "images" / split).mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "train" / "a.png")
    Image.new("RGB", (30, 10)).save(tmp_path / "images" / "val" / "b.png")
    gt = read_ground_truth(tmp_path)
    assert gt["a"].image_hw == (20, 40) and len(gt["a"].boxes) == 1
    assert gt["b"] == GtImage("b.png", (10, 30), [], [])


# ------------------------------------------------------------- Label Studio upload names

UPLOADED = "55b99580-000000000009"  # Label Studio's name of the upload 000000000009.jpg


@pytest.mark.parametrize(
    ("stems", "gt", "expected"),
    [
        pytest.param(["a", "b"], ["a", "b"], {"a": "a", "b": "b"}, id="same-stems"),
        pytest.param(["000000000009"], [UPLOADED], {"000000000009": UPLOADED}, id="prefix-in-gt"),
        pytest.param([UPLOADED], ["000000000009"], {UPLOADED: "000000000009"}, id="prefix-in-pred"),
        pytest.param(
            [UPLOADED],
            ["0a1b2c3d-000000000009"],
            {UPLOADED: "0a1b2c3d-000000000009"},
            id="two-uploads-of-one-photo",
        ),
        pytest.param(["x"], ["0a1b2c3d-x", "55b99580-x"], {}, id="ambiguous"),
        pytest.param(["x", "0a1b2c3d-x"], ["x"], {"x": "x"}, id="exact-match-first"),
        pytest.param(["55b9958-x", "55B99580-x"], ["x"], {}, id="not-a-prefix"),
        pytest.param(["55b99580-"], ["55b99580-"], {"55b99580-": "55b99580-"}, id="prefix-only"),
    ],
)
def test_images_match_ground_truth_with_or_without_the_upload_prefix(
    stems: list[str], gt: list[str], expected: dict[str, str]
) -> None:
    assert match_ground_truth(stems, dict.fromkeys(gt)) == expected


def test_a_label_studio_yolo_export_pairs_its_labels_with_the_original_photos(
    tmp_path: Path,
) -> None:
    # A label-only YOLO export of uploads, scored on the photos as they were before the upload.
    labels = _yolo_folder(
        tmp_path, {UPLOADED: "0 0.5 0.5 0.5 0.5\n", "local": "0 0.5 0.5 1 1\n"}, []
    )
    for stem in ("000000000009", "local", "unlabelled"):
        Image.new("RGB", (40, 20)).save(tmp_path / "images" / f"{stem}.png")
    gt = read_yolo(labels)
    assert sorted(gt) == sorted([UPLOADED, "local", "unlabelled"])  # no photo is a negative twice
    assert gt[UPLOADED].file_name == "000000000009.png" and len(gt[UPLOADED].boxes) == 1
    assert gt[UPLOADED].boxes[0] == Box(10.0, 5.0, 30.0, 15.0)
    assert gt["unlabelled"].boxes == []


def test_eval_scores_predictions_on_the_photos_against_an_export_of_their_uploads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from zerolabel.evaluation.metrics import evaluate

    labels = _yolo_folder(
        tmp_path, {UPLOADED: "0 0.5 0.5 0.5 0.5\n", "b": "0 0.5 0.5 1 1\n"}, [UPLOADED, "b"]
    )
    names = ("000000000009.jpg", "b.jpg", "other.jpg", "more.jpg")
    images = [{"id": i, "file_name": name} for i, name in enumerate(names, 1)]
    anns = [
        {"image_id": 1, "bbox": [10, 5, 20, 10], "score": 0.9},  # the upload's box, exactly
        {"image_id": 2, "bbox": [0, 0, 40, 20], "score": 0.8},
        {"image_id": 3, "bbox": [0, 0, 5, 5], "score": 0.7},
    ]
    predictions = tmp_path / "coco.json"
    predictions.write_text(json.dumps({"images": images, "annotations": anns}))
    with caplog.at_level("WARNING"):
        report = evaluate(predictions, labels)
    assert report.n_images == 2 and report.n_missing == 0 and report.corloc == 1.0
    assert report.ap50 == pytest.approx(1.0)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("2 of 4 predicted images match no ground-truth image")
    assert "'other', 'more'" in warning


def test_eval_methods_take_uploaded_names_and_count_the_images_without_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from zerolabel.loop.compare import images_with_ground_truth

    gt = {UPLOADED: GtImage("x.jpg", (2, 2), [], []), "b": GtImage("b.jpg", (2, 2), [], [])}
    files = [tmp_path / name for name in ("000000000009.png", "b.png", "c.png", "d.png")]
    with caplog.at_level("WARNING"):
        assert images_with_ground_truth(files, gt) == files[:2]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith("2 of 4 images of --images match no ground-truth image")
