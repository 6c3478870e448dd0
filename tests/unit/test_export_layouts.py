"""Train/val split and the written layouts: Ultralytics YOLO, VOC with JPEGImages, COCO per split.

Datasets are built directly (no Label Studio JSON): five images of 20 x 30 pixels with one box
each and two negatives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import read_ground_truth, read_voc
from zerolabel.formats.dataset import Dataset, ImageRecord, ObjectRecord
from zerolabel.formats.export import split_images, write_dataset

H, W = 20, 30


def _dataset() -> Dataset:
    images = [
        ImageRecord(f"im{i}.jpg", W, H, [ObjectRecord(Box(2, 3, 12 + i, 15), "object")], i)
        for i in range(5)
    ]
    images += [ImageRecord(f"neg{i}.jpg", W, H, [], 10 + i) for i in range(2)]
    return Dataset(images)


def _image_files(ds: Dataset, folder: Path) -> dict[str, Path]:
    folder.mkdir()
    files = {}
    for n, image in enumerate(ds.images):
        path = folder / image.file_name
        Image.new("RGB", (image.width, image.height), (n * 30, 0, 0)).save(path, quality=93)
        files[image.file_name] = path
    return files


def test_the_split_is_by_image_seeded_and_includes_negatives() -> None:
    first, again, other = _dataset(), _dataset(), _dataset()
    split_images(first, 0.3, seed=4)
    split_images(again, 0.3, seed=4)
    splits = [image.split for image in first.images]
    assert splits == [image.split for image in again.images]
    assert splits.count("val") == 2 and splits.count("train") == 5  # round(0.3 * 7)
    draws = set()
    for seed in range(20):
        split_images(other, 0.3, seed=seed)
        draws.add(tuple(image.split for image in other.images))
        negatives = [image.split for image in other.images if not image.objects]
        assert set(negatives) <= {"train", "val"}
    assert len(draws) > 1  # the seed matters
    assert any(
        "val" in [s for s, im in zip(d, first.images, strict=True) if not im.objects] for d in draws
    )  # negatives reach val too


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_a_split_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_images(_dataset(), fraction)


def test_split_export_writes_ultralytics_voc_and_coco_layouts(tmp_path: Path) -> None:
    ds = _dataset()
    split_images(ds, 0.3, seed=1)
    files = _image_files(ds, tmp_path / "downloaded")
    paths = write_dataset(ds, tmp_path / "out", images=files)
    part = {image.file_name: image.split for image in ds.images}
    stem = {image.file_name: Path(image.file_name).stem for image in ds.images}

    yolo = paths["yolo"]
    data = yaml.safe_load((yolo / "data.yaml").read_text())
    assert data == {
        "path": str(yolo.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "object"},
    }
    for name, split in part.items():
        assert (yolo / "images" / split / name).read_bytes() == files[name].read_bytes()
        assert (yolo / "labels" / split / f"{stem[name]}.txt").is_file()
    assert (yolo / "labels" / part["neg0.jpg"] / "neg0.txt").read_text() == ""
    gt = read_ground_truth(yolo)  # both splits, images sized from the placed files
    assert sorted(gt) == sorted(stem.values())
    assert gt["neg1"].boxes == [] and gt["neg1"].image_hw == (H, W)
    assert gt["im0"].boxes[0].to_list() == pytest.approx([2, 3, 12, 15], abs=1e-6)

    voc = paths["voc"]
    for name in part:
        assert (voc / "JPEGImages" / name).read_bytes() == files[name].read_bytes()
    lists = {
        s: (voc / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in part.values()
    }
    assert lists == {s: [stem[n] for n in part if part[n] == s] for s in ("train", "val")}
    assert read_voc(voc, split="val").keys() == set(lists["val"])

    for split in ("train", "val"):
        coco = json.loads(paths[f"coco_{split}"].read_text())
        assert [im["file_name"] for im in coco["images"]] == [n for n in part if part[n] == split]
        ids = {im["id"] for im in coco["images"]}
        assert all(a["image_id"] in ids for a in coco["annotations"])
    assert len(json.loads(paths["coco"].read_text())["images"]) == 7
    assert json.loads(paths["summary"].read_text())["split"] == {"train": 5, "val": 2}


def test_without_a_split_yolo_is_images_and_labels_side_by_side(tmp_path: Path) -> None:
    ds = _dataset()
    files = _image_files(ds, tmp_path / "downloaded")
    paths = write_dataset(ds, tmp_path / "out", formats=("yolo", "voc"), images=files)
    yolo = paths["yolo"]
    data = yaml.safe_load((yolo / "data.yaml").read_text())
    assert (data["train"], data["val"]) == ("images", "images")
    assert (yolo / "images" / "im3.jpg").read_bytes() == files["im3.jpg"].read_bytes()
    assert (yolo / "labels" / "neg0.txt").read_text() == ""
    assert not (paths["voc"] / "ImageSets" / "Main" / "val.txt").exists()
    assert len(read_ground_truth(yolo)) == 7


def test_yolo_labels_without_images_get_no_data_yaml_naming_a_missing_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", "zerolabel"):
        paths = write_dataset(_dataset(), tmp_path / "out", formats=("yolo",))
    yolo = paths["yolo"]
    assert not (yolo / "data.yaml").exists() and not (yolo / "images").exists()
    assert len(list((yolo / "labels").glob("im*.txt"))) == 5
    assert (yolo / "labels" / "classes.txt").read_text() == "object\n"
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "no data.yaml" in warning and "--download-images" in warning


def test_export_labels_without_downloading_images_writes_no_data_yaml(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from click.testing import CliRunner
    from zerolabel.cli.main import main

    box = {
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": W,
        "original_height": H,
        "value": {"x": 10, "y": 10, "width": 50, "height": 50, "rectanglelabels": ["cat"]},
    }
    tasks = [
        {"id": i, "data": {"image": f"/data/upload/1/55b99580-{i}.jpg"}, "annotations": []}
        for i in (1, 2)
    ]
    for task in tasks:
        task["annotations"] = [{"id": task["id"], "result": [{"id": "r", **box}]}]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks))
    out = tmp_path / "out"
    with caplog.at_level("WARNING", "zerolabel"):
        result = CliRunner().invoke(
            main, ["export", "--from-file", str(source), "-o", str(out), "-f", "yolo", "--labels"]
        )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "yolo" / "labels").iterdir()) == [
        "55b99580-1.txt",
        "55b99580-2.txt",
        "classes.txt",
    ]
    assert not (out / "yolo" / "data.yaml").exists()
    assert any("no data.yaml" in r.getMessage() for r in caplog.records)
