"""Task quality against ground truth, and the Spearman correlation of task score with it."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner
from zerolabel.cli.main import main
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import GtImage
from zerolabel.evaluation.metrics import evaluate, read_predictions, report_for
from zerolabel.evaluation.rank import task_pairs, task_quality, task_spearman
from zerolabel.geometry import box_iou
from zerolabel.loop.compare import COLUMNS, MethodRow, format_rows
from zerolabel.loop.evaluate import evaluate_export

A, B = Box(0, 0, 40, 40), Box(60, 60, 100, 100)


def _shifted(box: Box, dx: float) -> Box:
    return Box(box.x0 + dx, box.y0, box.x1 + dx, box.y1)


@pytest.mark.parametrize(
    ("boxes", "truth", "quality"),
    [
        pytest.param([A, B], [A, B], 1.0, id="exact"),
        pytest.param([], [], 1.0, id="negative-left-empty"),
        pytest.param([A], [], 0.0, id="negative-with-a-box"),
        pytest.param([], [A], 0.0, id="object-missed"),
        pytest.param([A], [A, B], 2 / 3, id="one-of-two-found"),
        pytest.param([A, B, Box(0, 60, 40, 100)], [A, B], 0.8, id="one-box-to-delete"),
        pytest.param([_shifted(A, 20)], [A], 1 / 3, id="half-shifted"),
    ],
)
def test_task_quality_is_the_matched_iou_f1(boxes, truth, quality):
    assert task_quality(boxes, truth) == pytest.approx(quality)


def test_task_quality_pairs_boxes_for_the_largest_total_iou():
    rng = np.random.default_rng(0)
    for _ in range(20):
        boxes = [_random_box(rng) for _ in range(int(rng.integers(1, 5)))]
        truth = [_random_box(rng) for _ in range(int(rng.integers(1, 5)))]
        best = max(  # every one-to-one pairing, by brute force
            sum(box_iou(boxes[i], truth[j]) for i, j in zip(rows, cols, strict=False))
            for rows in itertools.permutations(range(len(boxes)))
            for cols in itertools.permutations(range(len(truth)))
        )
        expected = 2 * best / (len(boxes) + len(truth))
        assert task_quality(boxes, truth) == pytest.approx(expected)


def _random_box(rng: np.random.Generator) -> Box:
    x, y = rng.integers(0, 60, 2)
    w, h = rng.integers(10, 40, 2)
    return Box(float(x), float(y), float(x + w), float(y + h))


def _tasks(n: int) -> dict[str, GtImage]:
    return {f"im{i}": GtImage(f"im{i}.jpg", (100, 100), [A], ["x"]) for i in range(n)}


def _graded(scores: list[float]) -> dict[str, list[tuple[Box, float]]]:
    """Task ``i`` boxes its object shifted by ``5 i`` px: quality falls as ``i`` grows."""
    return {f"im{i}": [(_shifted(A, 5 * i), s)] for i, s in enumerate(scores)}


def test_a_score_ordered_as_the_quality_gives_plus_one_and_reversed_minus_one():
    gt = _tasks(5)
    assert task_spearman(_graded([0.9, 0.7, 0.5, 0.3, 0.1]), gt) == (pytest.approx(1.0), 5)
    assert task_spearman(_graded([0.1, 0.3, 0.5, 0.7, 0.9]), gt) == (pytest.approx(-1.0), 5)


def test_ties_share_their_mean_rank():
    gt = _tasks(5) | {"neg": GtImage("neg.jpg", (100, 100), [], [])}
    preds = _graded([0.9, 0.6, 0.6, 0.2, 0.2]) | {"im4": [], "neg": []}  # nothing found: 0
    scores, qualities = task_pairs(preds, gt)
    assert scores == pytest.approx([0.9, 0.6, 0.6, 0.2, 0.0, 0.0])
    assert qualities[-2:] == [0.0, 1.0]  # an object missed; a negative left empty
    rho, n = task_spearman(preds, gt)
    assert n == 6 and rho == pytest.approx(scipy.stats.spearmanr(scores, qualities).statistic)


def test_the_task_score_is_the_mean_of_the_region_scores():
    gt = {"a": GtImage("a.jpg", (100, 100), [A, B], ["x", "y"])}
    preds = {"a": [(A, 0.9), (B, 0.5), (Box(0, 60, 40, 100), 0.1)]}
    assert task_pairs(preds, gt) == ([pytest.approx(0.5)], [pytest.approx(0.8)])


def test_only_run_images_with_ground_truth_count():
    gt = _tasks(3)
    preds = {"im0": [(A, 0.9)], "im1": [], "elsewhere": [(A, 0.4)]}  # im2 not run
    assert task_pairs(preds, gt) == ([0.9, 0.0], [1.0, 0.0])
    assert math.isnan(task_spearman({"im0": [(A, 0.9)]}, gt)[0])  # one task: no order


def test_the_report_prints_and_writes_the_task_figures(tmp_path: Path):
    gt = _tasks(4)
    preds = _graded([0.9, 0.7, 0.5])  # im3 not run: no task score, left out
    images = [
        {"id": i, "file_name": f"{stem}.jpg", "width": 100, "height": 100}
        for i, stem in enumerate(preds)
    ]
    annotations = [
        {"image_id": i, "bbox": [b.x0, b.y0, b.width, b.height], "score": s}
        for i, stem in enumerate(preds)
        for b, s in preds[stem]
    ]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(_coco_truth(gt)))
    report = evaluate(path, gt_path, "coco", csv_path=tmp_path / "per_image.csv")
    assert (report.n_tasks, report.task_spearman) == (3, pytest.approx(1.0))
    table = report.format_table()
    assert re.search(r"^tasks scored\s+3$", table, flags=re.MULTILINE)
    assert re.search(r"^Spearman \(task score, quality\)\s+\+1\.00$", table, flags=re.MULTILINE)
    with (tmp_path / "per_image.csv").open(newline="") as handle:
        rows = {r["file_name"]: r for r in csv.DictReader(handle)}
    assert float(rows["im0.jpg"]["task_score"]) == pytest.approx(0.9)
    assert float(rows["im0.jpg"]["task_quality"]) == pytest.approx(1.0)
    assert rows["im3.jpg"]["task_score"] == rows["im3.jpg"]["task_quality"] == ""


def _coco_truth(gt: dict[str, GtImage]) -> dict[str, object]:
    images = [
        {"id": i, "file_name": g.file_name, "width": 100, "height": 100}
        for i, g in enumerate(gt.values())
    ]
    annotations = [
        {
            "id": i,
            "image_id": i,
            "category_id": 1,
            "bbox": [A.x0, A.y0, A.width, A.height],
            "area": A.width * A.height,
            "iscrowd": 0,
        }
        for i in range(len(gt))
    ]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}


@pytest.mark.parametrize("score", ["NaN", "Infinity", '"high"', "null"])
def test_a_prediction_score_that_is_no_number_is_refused(tmp_path: Path, score: str):
    path = tmp_path / "coco.json"
    path.write_text(
        '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": '
        f'[{{"image_id": 1, "bbox": [0, 0, 5, 5], "score": {score}}}]}}'
    )
    with pytest.raises(ValueError, match="annotation on image 1: 'score' must be a finite number"):
        read_predictions(path)


def test_method_rows_show_both_correlations():
    gt = _tasks(3)
    good = report_for(_graded([0.9, 0.5, 0.1]), gt)
    bad = report_for(_graded([0.1, 0.5, 0.9]), gt)
    table = format_rows([MethodRow("good", good, 0), MethodRow("bad", bad, 0)])
    header, *lines = table.splitlines()
    assert header.split("  ")[0] == "method" and header.endswith("region rho  task rho")
    assert [line.split()[-1] for line in lines] == ["+1.00", "-1.00"]
    assert [line.split()[-2] for line in lines] == ["+1.00", "-1.00"]  # one region per task
    assert len(COLUMNS) == len(lines[0].split()) and len({len(x) for x in table.splitlines()}) == 1


def _ls_box(box: Box, score: float | None = None) -> dict[str, object]:
    """A Label Studio rectangle on a 100 x 100 image (percent = pixels here)."""
    item: dict[str, object] = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 100,
        "original_height": 100,
        "value": {
            "x": box.x0,
            "y": box.y0,
            "width": box.width,
            "height": box.height,
            "rotation": 0,
            "rectanglelabels": ["object"],
        },
    }
    return item if score is None else item | {"score": score}


def test_a_project_version_gets_the_task_figure_too(tmp_path: Path):
    tasks = [
        {
            "id": i + 1,
            "data": {"image": f"/data/upload/1/{i}.jpg"},
            "annotations": [{"id": i + 1, "result": [_ls_box(A)], "was_cancelled": False}],
            "predictions": [{"model_version": "v1", "result": [_ls_box(_shifted(A, 5 * i), s)]}],
        }
        for i, s in enumerate([0.9, 0.6, 0.3])
    ]
    tasks.append(  # not pre-labeled with v1: no task score, left out
        {
            "id": 9,
            "data": {"image": "/data/upload/1/9.jpg"},
            "annotations": [{"id": 9, "result": [_ls_box(B)], "was_cancelled": False}],
            "predictions": [{"model_version": "v0", "result": [_ls_box(B, 0.5)]}],
        }
    )
    report, _ = evaluate_export(tasks, model_version="v1")
    assert (report.n_tasks, report.task_spearman) == (3, pytest.approx(1.0))
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    result = CliRunner().invoke(main, ["eval", "--from-file", str(path), "--model-version", "v1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^Spearman \(task score, quality\)\s+\+1\.00$", result.output, re.MULTILINE)
