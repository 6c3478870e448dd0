"""Task scores on real predictions: for every method they spread over the example images, and
``zerolabel eval`` prints how well they rank the tasks (tiny random ViT, tiny trained detector).

Each method runs through ``zerolabel predict`` on the VOC and COCO8 example photos plus a uniform
grey image; the task score checked is the one Label Studio receives (``tasks.json``), and the
task-level Spearman printed by ``eval`` is recomputed from it and the ground truth.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner
from PIL import Image
from zerolabel import methods
from zerolabel.cli.main import main
from zerolabel.evaluation.ground_truth import GroundTruth, read_ground_truth, read_voc
from zerolabel.evaluation.metrics import format_rho, read_predictions
from zerolabel.evaluation.rank import task_quality

from tests.integration.cad_data import tiny_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VOC, COCO8 = EXAMPLES / "voc2007", EXAMPLES / "coco8"
BLANK = "blank.png"  # uniform grey: nothing to find
METHODS = [*methods.FEATURE_METHODS, "cad"]


@dataclass(frozen=True)
class Predicted:
    method: str
    task_scores: dict[str, float]  # file name -> the task score Label Studio gets
    region_scores: dict[str, list[float]]  # file name -> its region scores
    coco: Path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("task-scores") / "photos"
    folder.mkdir()
    for path in [*(VOC / "JPEGImages").glob("*.jpg"), *(COCO8 / "images").glob("*.jpg")]:
        shutil.copy(path, folder / path.name)
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(folder / BLANK)
    return folder


@pytest.fixture(scope="module")
def env(tiny_env: dict[str, str]) -> dict[str, str]:
    return {**tiny_env, "ZEROLABEL_MAX_SIDE": "224"}  # small inputs: a fast test


@pytest.fixture(scope="module")
def ground_truth() -> list[GroundTruth]:
    return [read_voc(VOC), read_ground_truth(COCO8 / "labels", "yolo", COCO8 / "images")]


def _detector_options(root: Path) -> list[str]:
    """A Faster R-CNN trained 4 steps on the VOC examples' boxes, served with a threshold just
    below the best detection of three photos: as with a briefly trained detector served at 0.5,
    its weakest kept detections crowd at the threshold on every image where it finds any."""
    from zerolabel.cad.inference import detect
    from zerolabel.cad.model import load_detector
    from zerolabel.cad.training import train
    from zerolabel.io.images import ImageLimits, load_file

    truth = read_voc(VOC)
    images, annotations = [], []
    for image_id, image in enumerate(truth.values(), 1):
        (h, w), name = image.image_hw, image.file_name
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        annotations += [
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [b.x0, b.y0, b.width, b.height],
                "area": b.width * b.height,
                "iscrowd": 0,
            }
            for b in image.boxes
        ]
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "o"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    checkpoint = train(
        tiny_config(False), root / "coco.json", VOC / "JPEGImages", root / "cad", progress=False
    )
    model, _ = load_detector(checkpoint, "cpu")
    photos = sorted((VOC / "JPEGImages").glob("*.jpg"))[:3]
    best = [
        max(s for _, s, _ in detect(model, load_file(p, ImageLimits()), score_threshold=0.0))
        for p in photos
    ]
    threshold = 0.9 * min(best)
    return ["--cad-checkpoint", str(checkpoint), "-p", f"score_threshold={threshold:.4f}"]


def _options(method: str, photos: Path, env: dict[str, str], root: Path) -> list[str]:
    if method == "cad":
        return [*_detector_options(root), "--device", "cpu"]
    if methods.get(method).fitted_required:  # rps: its direction fitted on the same photos
        fitted = CliRunner().invoke(main, ["rps-fit", str(photos), "-o", str(root)], env=env)
        assert fitted.exit_code == 0, fitted.output
        return ["--fitted", fitted.stdout.strip()]
    return []


@pytest.fixture(scope="module", params=METHODS)
def predicted(request, photos, env, tmp_path_factory) -> Predicted:
    method = request.param
    root = tmp_path_factory.mktemp(method)
    options = _options(method, photos, env, root)
    out = root / "out"
    result = CliRunner().invoke(
        main, ["predict", str(photos), "-m", method, "-o", str(out), *options], env=env
    )
    assert result.exit_code == 0, result.output
    task_scores, region_scores = {}, {}
    for task in json.loads((out / "tasks.json").read_text()):
        name = Path(task["data"]["image"]).name
        [prediction] = task["predictions"]
        task_scores[name] = prediction["score"]
        # A region is written as a box, a mask or both: "zl-<key>-<index>-box" / "-mask".
        by_region = {r["id"].rsplit("-", 1)[0]: r["score"] for r in prediction["result"]}
        region_scores[name] = list(by_region.values())
    return Predicted(method, task_scores, region_scores, out / "coco.json")


def test_task_scores_spread_and_empty_tasks_score_zero(predicted: Predicted, photos: Path):
    scores, regions = predicted.task_scores, predicted.region_scores
    assert set(scores) == {p.name for p in photos.iterdir()}
    found = {name: s for name, s in scores.items() if regions[name]}
    assert len(found) >= 2, f"{predicted.method} found objects in {len(found)} image(s) only"
    for name, score in scores.items():
        assert 0.0 <= score <= 1.0
        if not regions[name]:
            assert score == 0.0, f"{name}: nothing found, but a task score of {score}"
        else:
            assert all(0.0 <= r <= 1.0 for r in regions[name])
            assert score == pytest.approx(statistics.fmean(regions[name]))
    assert len(set(found.values())) == len(found), f"tied task scores: {sorted(found.values())}"
    assert min(found.values()) > 0.0  # after every task where nothing was found


GT_ARGS = (
    ["--gt", str(VOC / "Annotations")],
    ["--gt", str(COCO8 / "labels"), "--images", str(COCO8 / "images")],
)


def test_eval_prints_the_task_spearman_of_the_scores_label_studio_gets(
    predicted: Predicted, ground_truth: list[GroundTruth], env: dict[str, str]
):
    preds = read_predictions(predicted.coco)
    names = {Path(name).stem: name for name in predicted.task_scores}
    for gt, args in zip(ground_truth, GT_ARGS, strict=True):
        result = CliRunner().invoke(main, ["eval", str(predicted.coco), *args], env=env)
        assert result.exit_code == 0, result.output
        values = dict(re.findall(r"^(\S.*?)\s{2,}(\S+)$", result.output, flags=re.MULTILINE))
        stems = sorted(gt)
        scores = [predicted.task_scores[names[stem]] for stem in stems]
        qualities = [task_quality([b for b, _ in preds[s]], gt[s].boxes) for s in stems]
        assert values["tasks scored"] == str(len(stems))
        assert values["Spearman (task score, quality)"] == _rho(scores, qualities)


def _rho(x: list[float], y: list[float]) -> str:
    """scipy's Spearman rho as eval prints it ("n/a" where a side is constant)."""
    if len(set(x)) < 2 or len(set(y)) < 2:
        return format_rho(math.nan)
    return format_rho(float(scipy.stats.spearmanr(x, y).statistic))
