"""Evaluation: prediction reading, CorLoc (LOST protocol), COCO metrics, report and CSV."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import GroundTruth, GtImage, read_voc
from zerolabel.evaluation.metrics import (
    CORLOC_IOU,
    CSV_COLUMNS,
    EvalReport,
    Predictions,
    coco_metrics,
    corloc,
    evaluate,
    read_predictions,
)
from zerolabel.geometry import box_iou

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VOC = EXAMPLES / "voc2007"


def _write_predictions(path: Path, gt: GroundTruth, preds: Predictions) -> Path:
    """Write ``preds`` in zerolabel's COCO prediction format; images come from ``gt``."""
    images, annotations = [], []
    for image_id, stem in enumerate(sorted(preds), start=1):
        g = gt.get(stem)
        h, w = g.image_hw if g else (100, 100)
        name = g.file_name if g else f"{stem}.jpg"
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for box, score in preds[stem]:
            bbox = [box.x0, box.y0, box.width, box.height]
            annotations.append({"image_id": image_id, "bbox": bbox, "score": score})
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def _perfect(gt: GroundTruth) -> Predictions:
    return {stem: [(box, 1.0) for box in image.boxes] for stem, image in gt.items()}


def _shift_right(box: Box, fraction: float) -> Box:
    dx = box.width * fraction
    return Box(box.x0 + dx, box.y0, box.x1 + dx, box.y1)


def _one_box_gt(n: int = 3) -> GroundTruth:
    """``n`` images of 100x100 with one 40x40 box each, at different places."""
    return {
        f"im{i}": GtImage(f"im{i}.jpg", (100, 100), [Box(10 * i, 10, 10 * i + 40, 50)], ["x"])
        for i in range(n)
    }


# ---------------------------------------------------------------------------------- CorLoc


def test_perfect_predictions_on_voc_give_corloc_and_ap50_one(tmp_path: Path) -> None:
    gt = read_voc(VOC)
    pred_path = _write_predictions(tmp_path / "pred.json", gt, _perfect(gt))
    report = evaluate(pred_path, VOC)
    assert report.n_images == len(gt)
    assert report.n_missing == 0
    assert report.corloc == 1.0
    assert report.ap50 == pytest.approx(1.0)
    assert report.ap == pytest.approx(1.0)  # exact GT boxes: IoU 1 at every threshold


def test_predictions_shifted_below_half_iou_give_zero() -> None:
    gt = _one_box_gt()
    preds = {s: [(_shift_right(g.boxes[0], 0.5), 0.9)] for s, g in gt.items()}
    for stem, image in gt.items():
        assert max(box_iou(preds[stem][0][0], b) for b in image.boxes) < CORLOC_IOU
    value, rows = corloc(preds, gt)
    assert value == 0.0
    assert not any(r.hit for r in rows)
    assert coco_metrics(preds, gt)["ap50"] == 0.0


def test_hit_against_any_gt_box_not_only_the_first() -> None:
    gt = {"a": GtImage("a.jpg", (100, 100), [Box(0, 0, 10, 10), Box(50, 50, 90, 90)], ["x", "y"])}
    value, rows = corloc({"a": [(Box(50, 50, 90, 90), 0.5)]}, gt)
    assert value == 1.0
    assert rows[0].best_iou == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("wrong_score", "right_score", "hit"),
    [
        pytest.param(0.9, 0.1, False, id="high-scoring-wrong-box-is-a-miss"),
        pytest.param(0.1, 0.9, True, id="high-scoring-right-box-is-a-hit"),
    ],
)
def test_the_top_scoring_box_is_the_one_used(
    wrong_score: float, right_score: float, hit: bool
) -> None:
    gt = _one_box_gt(1)
    right = gt["im0"].boxes[0]
    wrong = Box(60, 60, 100, 100)
    assert box_iou(wrong, right) < CORLOC_IOU
    value, rows = corloc({"im0": [(wrong, wrong_score), (right, right_score)]}, gt)
    assert rows[0].hit is hit
    assert rows[0].top_score == max(wrong_score, right_score)
    assert value == float(hit)


def test_missing_images_count_as_misses() -> None:
    gt = _one_box_gt(4)
    preds = _perfect(gt)
    del preds["im0"]  # no entry at all
    preds["im1"] = []  # listed, but no box
    value, rows = corloc(preds, gt)
    assert len(rows) == len(gt)
    assert value == pytest.approx((len(gt) - 2) / len(gt))
    by_name = {r.file_name: r for r in rows}
    assert not by_name["im0.jpg"].hit and not by_name["im0.jpg"].has_entry
    assert not by_name["im1.jpg"].hit and by_name["im1.jpg"].has_entry
    assert by_name["im1.jpg"].top_score is None


def test_predictions_outside_the_ground_truth_are_ignored() -> None:
    gt = _one_box_gt(2)
    preds = _perfect(gt) | {"stranger": [(Box(0, 0, 5, 5), 1.0)]}
    value, rows = corloc(preds, gt)
    assert value == 1.0 and len(rows) == len(gt)
    assert coco_metrics(preds, gt)["ap50"] == pytest.approx(1.0)


def test_empty_ground_truth_gives_nan() -> None:
    value, rows = corloc({}, {})
    assert math.isnan(value) and rows == []


# ---------------------------------------------------------------------------------- COCO metrics


def test_coco_metrics_are_silent_and_perfect_on_exact_boxes(capsys: pytest.CaptureFixture) -> None:
    gt = _one_box_gt()
    metrics = coco_metrics(_perfect(gt), gt)
    assert set(metrics) == {"ap50", "ap", "ar100"}
    assert all(v == pytest.approx(1.0) for v in metrics.values())
    assert capsys.readouterr().out == ""


def test_coco_metrics_without_predictions_are_zero() -> None:
    metrics = coco_metrics({}, _one_box_gt())
    assert metrics["ap50"] == 0.0 and metrics["ar100"] == 0.0


def test_coco_metrics_merge_all_classes() -> None:
    gt = {"a": GtImage("a.jpg", (100, 100), [Box(0, 0, 40, 40), Box(50, 50, 90, 90)], ["x", "y"])}
    assert coco_metrics(_perfect(gt), gt)["ap50"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------- files


def test_prediction_file_round_trips(tmp_path: Path) -> None:
    gt = read_voc(VOC)
    preds = {s: [(b, 0.5 + i / 100) for i, b in enumerate(g.boxes)] for s, g in gt.items()}
    assert read_predictions(_write_predictions(tmp_path / "p.json", gt, preds)) == preds


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param([], "expected COCO-format", id="not-a-dict"),
        pytest.param({"images": [], "annotations": [{"image_id": 3}]}, "unknown", id="bad-image"),
        pytest.param(
            {
                "images": [{"id": 1, "file_name": "a.jpg"}],
                "annotations": [{"image_id": 1, "bbox": [0, 0, 1, 1]}],
            },
            "no 'score'",
            id="no-score",
        ),
    ],
)
def test_bad_prediction_files_are_rejected(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        read_predictions(path)


def test_csv_has_one_row_per_gt_image(tmp_path: Path) -> None:
    gt = read_voc(VOC)
    preds = _perfect(gt)
    missing = sorted(preds)[0]
    del preds[missing]
    csv_path = tmp_path / "per_image.csv"
    report = evaluate(
        _write_predictions(tmp_path / "p.json", gt, preds), VOC, "voc", csv_path=csv_path
    )
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert sorted(r["file_name"] for r in rows) == sorted(g.file_name for g in gt.values())
    by_name = {r["file_name"]: r for r in rows}
    assert by_name[gt[missing].file_name]["corloc_hit"] == "0"
    assert by_name[gt[missing].file_name]["top_score"] == ""
    assert sum(r["corloc_hit"] == "1" for r in rows) == len(gt) - 1
    assert all(int(r["n_gt"]) == len(gt[Path(r["file_name"]).stem].boxes) for r in rows)
    assert report.n_missing == 1
    assert report.corloc == pytest.approx((len(gt) - 1) / len(gt))


def test_format_table_is_aligned_and_names_every_metric() -> None:
    report = EvalReport(n_images=5011, n_missing=2, corloc=0.619, ap50=0.5, ap=math.nan, ar100=0.25)
    table = report.format_table()
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    for name in ("images", "CorLoc", "AP50", "AP ", "AR100"):
        assert name in table
    assert "61.9" in table and "n/a" in table


def test_listed_images_without_a_box_count_as_without_prediction(tmp_path: Path) -> None:
    gt = read_voc(VOC)
    preds = _perfect(gt)
    empty = sorted(preds)[:2]
    for stem in empty:
        preds[stem] = []  # listed in the file, as predict lists every image, but no box
    report = evaluate(_write_predictions(tmp_path / "p.json", gt, preds), VOC)
    assert report.n_missing == len(empty)


def test_negatives_get_a_row_but_no_corloc_and_their_boxes_are_false_positives() -> None:
    gt = _one_box_gt(2) | {"neg": GtImage("neg.jpg", (100, 100), [], [])}
    value, rows = corloc(_perfect(gt), gt)
    assert value == 1.0 and len(rows) == 3
    with_fp = _perfect(gt) | {"neg": [(Box(0, 0, 50, 50), 2.0)]}
    assert corloc(with_fp, gt)[0] == 1.0
    assert coco_metrics(with_fp, gt)["ap50"] < coco_metrics(_perfect(gt), gt)["ap50"]
