"""Scoring a model version's pre-labels against a project's corrected annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from zerolabel.cli.main import main
from zerolabel.contract import Box, DiscoveryResult, Region
from zerolabel.evaluation.metrics import evaluate
from zerolabel.geometry import rle_encode
from zerolabel.labelstudio.regions import DELETED
from zerolabel.labelstudio.tasks import Target, prediction
from zerolabel.loop.evaluate import evaluate_export

W, H = 200, 100
OBJECTS = {  # task id -> [(x0, y0, x1, y1, class)]
    1: [(10, 10, 60, 50, "dog")],
    2: [(100, 20, 180, 90, "cat"), (10, 10, 40, 40, "dog")],
    3: [(50, 30, 120, 80, "cat")],
}


def _rect(region_id, box, label, score=None):
    x0, y0, x1, y1 = box
    item = {
        "id": region_id,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "value": {
            "x": 100 * x0 / W,
            "y": 100 * y0 / H,
            "width": 100 * (x1 - x0) / W,
            "height": 100 * (y1 - y0) / H,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if score is not None:
        item["score"] = score
    return item


def _export(shift: float = 0.0, cluster_of=None):
    cluster_of = cluster_of or {"dog": "cluster_00", "cat": "cluster_01"}
    tasks = []
    for task_id, objects in OBJECTS.items():
        truth = [_rect(f"a{i}", o[:4], o[4]) for i, o in enumerate(objects)]
        guess = [
            _rect(
                f"zl-abc-{i}-box",
                (o[0] + shift, o[1], o[2] + shift, o[3]),
                cluster_of[o[4]],
                score=0.9 - 0.1 * i,
            )
            for i, o in enumerate(objects)
        ]
        tasks.append(
            {
                "id": task_id,
                "data": {"image": f"/data/upload/1/{task_id}.jpg"},
                "annotations": [{"id": task_id, "result": truth, "was_cancelled": False}],
                "predictions": [{"model_version": "v1", "result": guess}],
            }
        )
    return tasks


def test_perfect_pre_labels_score_full_marks_and_clusters_are_pure():
    report, clusters = evaluate_export(_export(), model_version="v1")
    assert report.n_images == 3 and report.corloc == 1.0 and report.ap50 == pytest.approx(1.0)
    assert clusters is not None and clusters.matched == 4
    assert clusters.purity == 1.0 and clusters.nmi == pytest.approx(1.0)


def test_shifted_pre_labels_miss_and_mixed_clusters_are_impure():
    report, _ = evaluate_export(_export(shift=45.0), model_version="v1")
    assert report.corloc == 0.0
    mixed = _export(cluster_of={"dog": "cluster_00", "cat": "cluster_00"})
    mixed[2]["predictions"][0]["result"][0]["value"]["rectanglelabels"] = ["cluster_01"]
    _, clusters = evaluate_export(mixed, model_version="v1")
    assert clusters is not None and clusters.purity < 1.0


def test_eval_from_an_export_file_prints_both_tables(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_export()))
    result = CliRunner().invoke(main, ["eval", "--from-file", str(path), "--model-version", "v1"])
    assert result.exit_code == 0, result.output
    assert "CorLoc" in result.output and "purity" in result.output


def _folder_files(tmp_path, tasks):
    """The same images as COCO ground truth and a COCO prediction file listing every image."""
    images, truth, guesses = [], [], []
    for task in tasks:
        image_id = task["id"]
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": W, "height": H})
        for anns, items in (
            (truth, task["annotations"][0]["result"]),
            (guesses, task["predictions"][0]["result"]),
        ):
            for item in items:
                v = item["value"]
                bbox = [
                    v["x"] * W / 100,
                    v["y"] * H / 100,
                    v["width"] * W / 100,
                    v["height"] * H / 100,
                ]
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "bbox": bbox,
                        "category_id": 1,
                        "score": item.get("score", 1.0),
                    }
                )
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps({"images": images, "annotations": truth, "categories": [{"id": 1}]}))
    pred.write_text(json.dumps({"images": images, "annotations": guesses}))
    return pred, gt


def test_without_prediction_counts_images_without_a_predicted_region_in_both_modes(tmp_path):
    tasks = _export()
    tasks[1]["predictions"][0]["result"] = []  # the model found nothing on task 2
    project_report, _ = evaluate_export(tasks, model_version="v1")
    pred, gt = _folder_files(tmp_path, tasks)
    folder_report = evaluate(pred, gt)
    assert project_report.n_missing == folder_report.n_missing == 1
    assert project_report.n_images == folder_report.n_images == 3


def test_a_negative_is_in_the_ground_truth_and_boxes_on_it_are_false_positives():
    tasks = _export()
    tasks.append(
        {
            "id": 4,
            "data": {"image": "/data/upload/1/4.jpg"},
            "annotations": [{"id": 4, "result": [], "was_cancelled": False}],  # nothing here
            "predictions": [
                {
                    "model_version": "v1",
                    "result": [_rect("zl-abc-0-box", (5, 5, 50, 50), "cluster_00", 0.95)],
                }
            ],
        }
    )
    report, _ = evaluate_export(tasks, model_version="v1")
    assert (report.n_images, report.n_negatives) == (4, 1)
    assert report.corloc == 1.0  # nothing to localise on a negative
    assert report.ap50 < 1.0  # the top-scoring box of the run is a false positive
    assert "negatives (no object)" in report.format_table()


def test_an_unlabelled_project_is_refused_rather_than_scored():
    tasks = _export()
    for task in tasks:
        task["annotations"] = []
    with pytest.raises(ValueError, match="no task has an annotation"):
        evaluate_export(tasks, model_version="v1")


def test_an_object_whose_box_the_annotator_deleted_is_not_ground_truth(caplog):
    """A prediction sent as a box and a mask; the annotation kept the mask, deleted the box."""
    mask = np.zeros((H, W), dtype=bool)
    mask[10:50, 10:60] = True
    kept = Region(Box(100, 20, 180, 90), 0.8, "maskcut")  # a box without a mask
    deleted = Region(Box(10, 10, 60, 50), 0.8, "maskcut", rle_encode(mask))
    result = DiscoveryResult("a.jpg", (H, W), [kept, deleted], "v1")
    predicted = prediction(result, Target())  # the "both" form: a box and a mask
    annotated = [item for item in predicted["result"] if not item["id"].endswith("1-box")]
    task = {
        "id": 1,
        "data": {"image": "/data/upload/1/1.jpg"},
        "annotations": [{"id": 7, "result": annotated, "parent_prediction": 3}],
        "predictions": [predicted | {"id": 3}],
    }
    with caplog.at_level("INFO", logger="zerolabel.loop.evaluate"):
        report, _ = evaluate_export([task], model_version="v1")
    assert report.n_images == 1 and report.ap50 < 1.0  # the deleted object is a false positive
    assert f"annotations: 1 object(s) sent as a box and a mask: {DELETED}" in caplog.text
