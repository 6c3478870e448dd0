"""Do the scores predict quality? Spearman rank correlations, per region and per task.

**Regions.** Every predicted region of a ground-truth image gives one pair: its score and the
IoU of its box with the best-matching ground-truth box of that image (0 on an image without
objects, where any region is wrong).

**Tasks.** Every ground-truth image with a prediction entry (an image run and listed, with or
without regions) gives one pair: its task score (:meth:`DiscoveryResult.task_score
<zerolabel.contract.DiscoveryResult.task_score>` of its region scores, what Label Studio's queue
sorts by) and its quality (:func:`task_quality`: how little correcting its pre-labels need).

Spearman's rho is the Pearson correlation of the two rank vectors, tied values sharing the mean
of their ranks (as ``scipy.stats.spearmanr`` computes it). +1: the score orders regions (tasks)
exactly as their quality does, so sorting by score ascending finds the worst pre-labels first;
0: the score says nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from zerolabel.contract import Box, DiscoveryResult
from zerolabel.evaluation.ground_truth import GtImage
from zerolabel.geometry import box_iou


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; tied values get the mean of the ranks they span.

    Example: ``ranks([0.3, 0.1, 0.3])`` is ``[2.5, 1.0, 2.5]``.
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mean_rank = (start + end) / 2 + 1
        for position in range(start, end + 1):
            result[order[position]] = mean_rank
        start = end + 1
    return result


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences, ties averaged.

    Returns:
        rho in [-1, 1]; NaN with fewer than two pairs or when either side is constant (its
        ranks have no variance: no order to agree with).

    Raises:
        ValueError: sequences of different lengths, or a NaN value.
    """
    if len(x) != len(y):
        raise ValueError(f"need pairs: {len(x)} scores but {len(y)} IoUs")
    if any(math.isnan(v) for v in (*x, *y)):
        raise ValueError("scores and IoUs must be numbers, got NaN")
    if len(x) < 2:
        return math.nan
    return _pearson(ranks(x), ranks(y))


def _pearson(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da = [v - mean_a for v in a]
    db = [v - mean_b for v in b]
    norm = math.sqrt(sum(v * v for v in da) * sum(v * v for v in db))
    if norm == 0.0:
        return math.nan
    return max(-1.0, min(1.0, sum(p * q for p, q in zip(da, db, strict=True)) / norm))


def score_iou_pairs(
    preds: Mapping[str, Sequence[tuple[Box, float]]], gt: Mapping[str, GtImage]
) -> tuple[list[float], list[float]]:
    """Score and best ground-truth IoU of every predicted region on a ground-truth image.

    Args:
        preds: file stem -> predicted ``(box, score)`` pairs.
        gt: file stem -> ground truth; predictions on other images are left out.

    Returns:
        The scores and the IoUs, in the same order (stems sorted, regions as listed).
    """
    scores: list[float] = []
    ious: list[float] = []
    for stem in sorted(preds):
        if stem not in gt:
            continue
        for box, score in preds[stem]:
            scores.append(float(score))
            ious.append(max((box_iou(box, g) for g in gt[stem].boxes), default=0.0))
    return scores, ious


def score_iou_spearman(
    preds: Mapping[str, Sequence[tuple[Box, float]]], gt: Mapping[str, GtImage]
) -> tuple[float, int]:
    """Spearman's rho of region score and best ground-truth IoU, and the number of regions."""
    scores, ious = score_iou_pairs(preds, gt)
    return spearman(scores, ious), len(scores)


def task_quality(boxes: Sequence[Box], truth: Sequence[Box]) -> float:
    """How little correcting a task's pre-labels need: a matched-IoU F1 in [0, 1].

    Predicted and ground-truth boxes are paired one to one so that the sum of IoUs is largest
    (Hungarian matching). Each predicted box and each ground-truth box then gets the IoU with
    its partner, 0 without one (a region to delete, an object to draw), and the quality is the
    mean over all of them: ``2 * sum(matched IoU) / (len(boxes) + len(truth))``. 1: every
    object is boxed exactly and nothing else; 0: nothing overlaps. An image without objects
    and without predictions needs no correction: 1.

    Args:
        boxes: the task's predicted boxes.
        truth: its ground-truth boxes.
    """
    if not boxes and not truth:
        return 1.0
    if not boxes or not truth:
        return 0.0
    ious = np.array([[box_iou(b, g) for g in truth] for b in boxes])
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return float(2.0 * ious[rows, cols].sum() / (len(boxes) + len(truth)))


def task_pairs(
    preds: Mapping[str, Sequence[tuple[Box, float]]], gt: Mapping[str, GtImage]
) -> tuple[list[float], list[float]]:
    """Task score and task quality of every ground-truth image with a prediction entry.

    Args:
        preds: file stem -> predicted ``(box, score)`` pairs; an image listed without pairs
            is a task where nothing was found (score 0); an image not listed was not run.
        gt: file stem -> ground truth; predictions on other images are left out.

    Returns:
        The task scores and the qualities, in the same order (stems sorted).
    """
    scores: list[float] = []
    qualities: list[float] = []
    for stem in sorted(preds):
        if stem not in gt:
            continue
        pairs = preds[stem]
        scores.append(DiscoveryResult.task_score([float(score) for _, score in pairs]))
        qualities.append(task_quality([box for box, _ in pairs], gt[stem].boxes))
    return scores, qualities


def task_spearman(
    preds: Mapping[str, Sequence[tuple[Box, float]]], gt: Mapping[str, GtImage]
) -> tuple[float, int]:
    """Spearman's rho of task score and task quality (:func:`task_pairs`), and the task count."""
    scores, qualities = task_pairs(preds, gt)
    return spearman(scores, qualities), len(scores)
