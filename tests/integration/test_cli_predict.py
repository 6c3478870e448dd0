"""``zerolabel predict`` and ``zerolabel eval`` on the example photos (tiny random ViT)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from zerolabel.cli.main import main

from tests.ls_reference import check_ls_task

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Four VOC photos plus files that must be reported and skipped."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("000001.jpg", "000004.jpg", "000032.jpg", "000033.jpg"):
        shutil.copy(VOC / "JPEGImages" / name, folder / name)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    truncated = (VOC / "JPEGImages" / "000005.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(truncated[: len(truncated) // 4])
    return folder


@pytest.mark.parametrize("method", ["lost", "tokencut", "maskcut"])
def test_predict_writes_ls_tasks_and_coco_and_reports_bad_files(method, tiny_env, photos, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(photos),
            "-m",
            method,
            "-o",
            str(out),
            "--document-root",
            str(photos),
            "--batch-size",
            "3",
        ],
        env=tiny_env,
    )
    assert result.exit_code == 1, result.output  # bad files make the run fail, after the rest
    for bad in ("empty.jpg", "notes.png", "truncated.jpg"):
        assert f"FAILED {photos / bad}" in result.output
    assert "4 image(s) pre-labeled" in result.output

    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [
        f"/data/local-files/?d={name}"
        for name in ("000001.jpg", "000004.jpg", "000032.jpg", "000033.jpg")
    ]
    versions = set()
    for item in tasks:
        check_ls_task(item, "image")
        prediction = item["predictions"][0]
        versions.add(prediction["model_version"])
        assert prediction["result"], "random features still give at least one region"
        kinds = {r["type"] for r in prediction["result"]}
        # One region per object (--shapes auto): MaskCut's masks are refined to pixels and sent
        # as brushes; LOST's and TokenCut's are cut on the patch grid and sent as boxes.
        assert kinds == ({"brushlabels"} if method == "maskcut" else {"rectanglelabels"})
    assert len(versions) == 1 and method in versions.pop()

    coco = COCO()
    coco.dataset = json.loads((out / "coco.json").read_text())
    coco.createIndex()
    assert len(coco.imgs) == 4
    for ann in coco.anns.values():
        image = coco.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x < x + w <= image["width"] and 0 <= y < y + h <= image["height"]
        mask = coco.annToMask(ann)
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == ann["area"]
        rows, cols = np.nonzero(mask)  # the box is the mask's bounding box
        assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x, y, x + w, y + h)


def test_predict_is_deterministic_across_runs(tiny_env, photos, tmp_path):
    outputs = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        CliRunner().invoke(
            main,
            ["predict", str(photos / "000001.jpg"), str(photos / "000004.jpg"), "-o", str(out)],
            env=tiny_env,
        )
        outputs.append(json.loads((out / "tasks.json").read_text()))
    assert outputs[0] == outputs[1]


def test_eval_prints_corloc_and_ap_on_voc(tiny_env, photos, tmp_path):
    out = tmp_path / "out"
    CliRunner().invoke(main, ["predict", str(VOC / "JPEGImages"), "-o", str(out)], env=tiny_env)
    csv_path = tmp_path / "per_image.csv"
    result = CliRunner().invoke(
        main,
        ["eval", str(out / "coco.json"), "--gt", str(VOC / "Annotations"), "--csv", str(csv_path)],
    )
    assert result.exit_code == 0, result.output
    for metric in ("CorLoc", "AP50", "AR100"):
        assert metric in result.output
    assert len(csv_path.read_text().strip().splitlines()) == 1 + 13


def test_without_weights_and_offline_it_fails_at_once_with_instructions(photos, tmp_path):
    start = time.perf_counter()
    result = CliRunner().invoke(
        main,
        ["predict", str(photos / "000001.jpg"), "-o", str(tmp_path)],
        env={"ZEROLABEL_OFFLINE": "1", "ZEROLABEL_CHECKPOINT": "", "ZEROLABEL_DEVICE": "cpu"},
    )
    assert result.exit_code == 1
    assert "--checkpoint PATH or ZEROLABEL_CHECKPOINT" in result.output
    assert time.perf_counter() - start < 10


def test_unknown_input_is_a_usage_error(tiny_env, tmp_path):
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "nothing*.jpg")], env=tiny_env)
    assert result.exit_code == 2 and "matches no file" in result.output


def test_an_image_that_breaks_discovery_fails_alone(tiny_env, photos, tmp_path, monkeypatch):
    from zerolabel.pipeline import Discoverer

    real_run = Discoverer.run

    def run(self, images, batch_size=8):
        if any(image.source.endswith("000004.jpg") for image in images):
            raise RuntimeError("out of memory")  # what a huge batch can do on a GPU
        return real_run(self, images, batch_size)

    monkeypatch.setattr(Discoverer, "run", run)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["predict", str(photos), "-o", str(out), "--batch-size", "4"], env=tiny_env
    )
    assert result.exit_code == 1
    assert f"FAILED {photos / '000004.jpg'}: discovery failed: out of memory" in result.output
    assert "3 image(s) pre-labeled" in result.output
    assert len(json.loads((out / "tasks.json").read_text())) == 3
