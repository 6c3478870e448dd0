"""Evaluation of discovered boxes against ground truth: CorLoc and class-agnostic COCO metrics.

CorLoc follows LOST's protocol (see docs/METHODS.md): each image's top-scoring box is a hit
when its IoU with ANY ground-truth box is at least 0.5; every ground-truth image with an object
counts, and such an image without a prediction is a miss. Negatives (ground-truth images
without objects) have nothing to localise: they are left out of CorLoc, and boxes predicted on
them are false positives in AP. AP50, AP (0.5:0.95) and AR100 come from pycocotools with
every ground-truth class merged into one "object" category. Whether the scores rank by quality
is two Spearman correlations (:mod:`.rank`): region score with IoU, and task score with the
task's quality (its matched-IoU F1). Predictions are matched to ground truth by file stem
(``000001`` for ``JPEGImages/000001.jpg``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerolabel.contract import Box, DiscoveryResult
from zerolabel.evaluation.ground_truth import (
    GroundTruth,
    keyed_by_ground_truth,
    load_json,
    read_ground_truth,
    unique_stem,
)
from zerolabel.evaluation.rank import score_iou_spearman, task_quality, task_spearman
from zerolabel.formats.coco import coco_annotation
from zerolabel.geometry import box_iou

CORLOC_IOU = 0.5
"""IoU at or above which an image's top box localises an object (LOST, VOC convention)."""

CSV_COLUMNS = (
    "file_name",
    "n_gt",
    "n_pred",
    "top_score",
    "best_iou",
    "corloc_hit",
    "task_score",
    "task_quality",
)
"""Columns of the per-image CSV written by :func:`evaluate`."""

Predictions = dict[str, list[tuple[Box, float]]]
"""File stem -> that image's predicted ``(box, score)`` pairs, in file order."""


@dataclass(frozen=True)
class ImageResult:
    """CorLoc outcome, task score and task quality of one ground-truth image."""

    file_name: str
    n_gt: int
    n_pred: int
    top_score: float | None  # score of the box CorLoc used; None without predictions
    best_iou: float | None  # IoU of that box with its best-matching GT box
    hit: bool
    has_entry: bool  # the prediction file lists this image at all
    task_score: float | None = None  # DiscoveryResult.task_score; None without an entry
    task_quality: float | None = None  # rank.task_quality; None without an entry


def read_predictions(pred_path: str | Path) -> Predictions:
    """Read a COCO-format prediction file written by zerolabel.

    Args:
        pred_path: JSON with ``images`` (``id``, ``file_name``, ...) and ``annotations``
            (``image_id``, ``bbox`` as ``[x, y, w, h]`` pixels, ``score``).

    Returns:
        Predictions keyed by the stem of each image's ``file_name``; listed images without
        annotations map to an empty list.

    Raises:
        ValueError: not such a file, an annotation without a finite score or with an unknown
            image, or two images sharing a stem.
    """
    path = Path(pred_path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected COCO-format predictions with an 'images' list")
    stems: dict[Any, str] = {}
    preds: Predictions = {}
    for im in data["images"]:
        stem = unique_stem(preds, im["file_name"], path)
        stems[im["id"]] = stem
        preds[stem] = []
    for ann in data.get("annotations", []):
        if ann.get("image_id") not in stems:
            raise ValueError(f"{path}: annotation names unknown image_id {ann.get('image_id')!r}")
        if "score" not in ann:
            raise ValueError(f"{path}: annotation on image {ann['image_id']!r} has no 'score'")
        score = _finite(ann["score"], f"{path}: annotation on image {ann['image_id']!r}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        preds[stems[ann["image_id"]]].append((Box(x, y, x + w, y + h), score))
    return preds


def _finite(value: Any, where: str) -> float:
    """``value`` as a finite float, or a ValueError naming ``where``."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise ValueError(f"{where}: 'score' must be a finite number, got {value!r}")
    return score


def corloc(preds: Predictions, gt: GroundTruth) -> tuple[float, list[ImageResult]]:
    """Correct localisation rate, LOST protocol.

    The top-scoring box of each image (the first one listed on a tie) is a hit when its IoU
    with any ground-truth box is at least :data:`CORLOC_IOU`. All ground-truth images with an
    object count; those without predictions are misses. Negatives get a row (never a hit) but
    are not counted. Predictions for images outside ``gt`` are ignored.

    Args:
        preds: predictions keyed by file stem.
        gt: ground truth keyed by file stem.

    Returns:
        The fraction of hits in [0, 1] (NaN when no GT image has an object) and one result per
        GT image, in sorted stem order.
    """
    rows = [
        _image_result(preds.get(stem), gt[stem].file_name, gt[stem].boxes) for stem in sorted(gt)
    ]
    counted = [r for r in rows if r.n_gt > 0]
    value = sum(r.hit for r in counted) / len(counted) if counted else math.nan
    return value, rows


def _image_result(
    pred: list[tuple[Box, float]] | None, file_name: str, gt_boxes: list[Box]
) -> ImageResult:
    """CorLoc outcome and task figures of one image (``pred`` is None without an entry)."""
    scored = pred or []
    top_score: float | None = None
    best: float | None = None
    if scored:
        top_box, top_score = max(scored, key=lambda pair: pair[1])
        best = max((box_iou(top_box, g) for g in gt_boxes), default=0.0)
    return ImageResult(
        file_name,
        len(gt_boxes),
        len(scored),
        top_score,
        best,
        best is not None and best >= CORLOC_IOU,
        pred is not None,
        None if pred is None else DiscoveryResult.task_score([score for _, score in scored]),
        None if pred is None else task_quality([box for box, _ in scored], gt_boxes),
    )


def coco_metrics(preds: Predictions, gt: GroundTruth) -> dict[str, float]:
    """Class-agnostic COCO box metrics with pycocotools.

    Every ground-truth box becomes category "object" (the exact boxes of ``gt``, so VOC keeps
    its shifted boxes); predictions on images outside ``gt`` are ignored.

    Args:
        preds: predictions keyed by file stem.
        gt: ground truth keyed by file stem.

    Returns:
        ``{"ap50", "ap", "ar100"}`` in [0, 1]; NaN where undefined (no GT boxes at all).
    """
    from pycocotools.coco import COCO  # optional dependency: imported where it is needed
    from pycocotools.cocoeval import COCOeval

    image_ids = {stem: i for i, stem in enumerate(sorted(gt), start=1)}
    gt_anns = [(image_ids[stem], box, 1.0) for stem, image in gt.items() for box in image.boxes]
    dt_anns = [
        (image_ids[stem], box, score)
        for stem, pairs in preds.items()
        if stem in image_ids
        for box, score in pairs
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = _coco_dataset(gt, image_ids, gt_anns, with_score=False)
        coco_dt.dataset = _coco_dataset(gt, image_ids, dt_anns, with_score=True)
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {name: _stat(stats[i]) for name, i in (("ap50", 1), ("ap", 0), ("ar100", 8))}


def _coco_dataset(
    gt: GroundTruth,
    image_ids: dict[str, int],
    anns: list[tuple[int, Box, float]],
    with_score: bool,
) -> dict[str, Any]:
    """A one-category COCO dataset dict over the GT images, with ``anns`` as annotations."""
    sizes = {image_ids[stem]: image.image_hw for stem, image in gt.items()}
    annotations = [
        {"id": ann_id}
        | coco_annotation(
            box,
            None,
            image_id=image_id,
            category_id=1,
            image_hw=sizes[image_id],
            score=score if with_score else None,
            where=f"image {image_id}",
        )
        for ann_id, (image_id, box, score) in enumerate(anns, start=1)
    ]
    images = [
        {
            "id": image_ids[s],
            "file_name": g.file_name,
            "height": g.image_hw[0],
            "width": g.image_hw[1],
        }
        for s, g in gt.items()
    ]
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }


def _stat(value: float) -> float:
    """pycocotools reports -1 where a metric is undefined; NaN says so honestly."""
    return float(value) if value >= 0 else math.nan


@dataclass(frozen=True)
class EvalReport:
    """Dataset-level metrics (fractions in [0, 1]) and the per-image CorLoc rows."""

    n_images: int  # ground-truth images, all counted
    n_missing: int  # ground-truth images without any predicted region
    corloc: float
    ap50: float
    ap: float
    ar100: float
    rows: list[ImageResult] = field(default_factory=list)
    n_negatives: int = 0  # ground-truth images without objects
    spearman: float = math.nan  # rank correlation of region score and best GT IoU
    n_regions: int = 0  # predicted regions on ground-truth images (the Spearman pairs)
    task_spearman: float = math.nan  # rank correlation of task score and task quality
    n_tasks: int = 0  # ground-truth images with a prediction entry (the task pairs)

    def format_table(self) -> str:
        """A small aligned text table; metrics shown as percentages."""
        lines = [
            ("images", str(self.n_images)),
            ("negatives (no object)", str(self.n_negatives)),
            ("without prediction", str(self.n_missing)),
            ("CorLoc (%)", _percent(self.corloc)),
            ("AP50 (%)", _percent(self.ap50)),
            ("AP (%)", _percent(self.ap)),
            ("AR100 (%)", _percent(self.ar100)),
            ("regions scored", str(self.n_regions)),
            ("Spearman (score, IoU)", format_rho(self.spearman)),
            ("tasks scored", str(self.n_tasks)),
            ("Spearman (task score, quality)", format_rho(self.task_spearman)),
        ]
        name_w = max(len(name) for name, _ in lines)
        value_w = max(len(value) for _, value in lines)
        return "\n".join(f"{name:<{name_w}}  {value:>{value_w}}" for name, value in lines)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def format_rho(value: float) -> str:
    """A correlation with a sign and two decimals, ``n/a`` when undefined."""
    return "n/a" if math.isnan(value) else f"{value:+.2f}"


def evaluate(
    pred_path: str | Path,
    gt_path: str | Path,
    gt_format: str = "auto",
    images_dir: str | Path | None = None,
    csv_path: str | Path | None = None,
) -> EvalReport:
    """Evaluate a prediction file against ground truth.

    Args:
        pred_path: COCO-format predictions (see :func:`read_predictions`).
        gt_path: ground truth file or folder (see
            :func:`zerolabel.evaluation.ground_truth.read_ground_truth`).
        gt_format: ``"auto"``, ``"voc"``, ``"coco"`` or ``"yolo"``.
        images_dir: YOLO ground truth only: the image folder.
        csv_path: where to write the per-image CSV (:data:`CSV_COLUMNS`); not written if None.

    Returns:
        The report.
    """
    gt = read_ground_truth(gt_path, gt_format, images_dir)
    return report_for(keyed_by_ground_truth(read_predictions(pred_path), gt), gt, csv_path)


def report_for(
    preds: Predictions, gt: GroundTruth, csv_path: str | Path | None = None
) -> EvalReport:
    """CorLoc, COCO metrics and score ranks of ``preds`` against ``gt``; the CSV when asked."""
    value, rows = corloc(preds, gt)
    metrics = coco_metrics(preds, gt)
    rho, n_regions = score_iou_spearman(preds, gt)
    task_rho, n_tasks = task_spearman(preds, gt)
    if csv_path is not None:
        write_csv(rows, csv_path)
    return EvalReport(
        n_images=len(rows),
        n_missing=sum(r.n_pred == 0 for r in rows),
        corloc=value,
        ap50=metrics["ap50"],
        ap=metrics["ap"],
        ar100=metrics["ar100"],
        rows=rows,
        n_negatives=sum(r.n_gt == 0 for r in rows),
        spearman=rho,
        n_regions=n_regions,
        task_spearman=task_rho,
        n_tasks=n_tasks,
    )


def write_csv(rows: list[ImageResult], csv_path: str | Path) -> None:
    """Write one CSV row per ground-truth image; empty cells where an image has no box (no
    entry, for the task columns)."""
    with Path(csv_path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow(
                [
                    r.file_name,
                    r.n_gt,
                    r.n_pred,
                    _cell(r.top_score),
                    _cell(r.best_iou),
                    int(r.hit),
                    _cell(r.task_score),
                    _cell(r.task_quality),
                ]
            )


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"
