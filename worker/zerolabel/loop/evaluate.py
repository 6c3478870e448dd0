"""Measure a model version's pre-labels against a project's corrected annotations.

Both come from one Label Studio JSON export: annotations are the ground truth (negatives, an
annotation with an empty result, included: predictions on them are false positives), the chosen
model_version's predictions are scored with CorLoc, class-agnostic AP/AR and the Spearman
correlations of region score with IoU and of task score with task quality
(:mod:`zerolabel.evaluation.rank`; a task's score is recomputed from its region scores, tasks
without a prediction of that version are left out); when the predictions carry pseudo-classes
and the annotations carry classes, cluster purity, NMI and Hungarian accuracy are computed over
predicted objects matched to an annotated one. Tasks whose predictions cannot be scored are
refused, never scored as zeros (:func:`check_predictions`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerolabel.evaluation.clusters import hungarian_accuracy, nmi, purity
from zerolabel.evaluation.ground_truth import GroundTruth, GtImage
from zerolabel.evaluation.metrics import EvalReport, Predictions, report_for
from zerolabel.formats.export import Dataset, check_predictions, read_ls_export
from zerolabel.geometry import box_iou
from zerolabel.progress import stage

logger = logging.getLogger(__name__)

MATCH_IOU = 0.5


@dataclass(frozen=True)
class ClusterScores:
    """Agreement of pseudo-classes with annotated classes over matched objects."""

    matched: int
    purity: float
    nmi: float
    hungarian_accuracy: float

    def format_table(self) -> str:
        rows = [
            ("matched objects", str(self.matched)),
            ("purity (%)", _pct(self.purity)),
            ("NMI (%)", _pct(self.nmi)),
            ("Hungarian acc. (%)", _pct(self.hungarian_accuracy)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def evaluate_export(
    data: list[dict[str, Any]], *, model_version: str | None = None, csv_path: Path | None = None
) -> tuple[EvalReport, ClusterScores | None]:
    """Score ``model_version``'s predictions (default: each task's latest) against annotations.

    Raises:
        ValueError: the predictions are listed by id only, absent, or of no such version; or
            no task has an annotation to score them against.
    """
    check_predictions(data, model_version)
    truth = read_ls_export(data, source="annotations")
    if not truth.images:
        raise ValueError(
            "no task has an annotation to score against: annotate (or accept) some tasks first"
        )
    for how, count in sorted(truth.box_mask_conflicts.items()):
        logger.info("annotations: %d object(s) sent as a box and a mask: %s", count, how)
    predicted = read_ls_export(data, source="predictions", model_version=model_version)
    gt = _ground_truth(truth)
    preds = _predictions(predicted)
    with stage(f"scoring the predictions of {len(preds)} task(s)"):
        return report_for(preds, gt, csv_path), _cluster_scores(predicted, gt)


def _key(task_id: Any) -> str:
    return f"task-{task_id}"


def _ground_truth(ds: Dataset) -> GroundTruth:
    return {
        _key(im.task_id): GtImage(
            im.file_name,
            (im.height, im.width),
            [o.box for o in im.objects],
            [o.label for o in im.objects],
        )
        for im in ds.images
    }


def _predictions(ds: Dataset) -> Predictions:
    return {
        _key(im.task_id): [(o.box, 0.0 if o.score is None else o.score) for o in im.objects]
        for im in ds.images
    }


def _cluster_scores(predicted: Dataset, gt: GroundTruth) -> ClusterScores | None:
    pairs: list[tuple[str, str]] = []
    for image in predicted.images:
        truth = gt.get(_key(image.task_id))
        if truth is None or not truth.boxes:
            continue
        for obj in image.objects:
            ious = [box_iou(obj.box, box) for box in truth.boxes]
            best = max(range(len(ious)), key=ious.__getitem__)
            if ious[best] >= MATCH_IOU:
                pairs.append((obj.label, truth.labels[best]))
    if len({p for p, _ in pairs}) < 2 or len({t for _, t in pairs}) < 2:
        return None  # one pseudo-class or one true class: nothing to measure
    pred, true = [p for p, _ in pairs], [t for _, t in pairs]
    return ClusterScores(
        len(pairs), purity(pred, true), nmi(pred, true), hungarian_accuracy(pred, true)
    )
