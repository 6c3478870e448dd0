"""Held-out images: a seeded split by image, and AP50/AP/AR100 on them at each checkpoint.

The metrics are the class-agnostic COCO box metrics of :func:`zerolabel.evaluation.metrics.
coco_metrics` (pycocotools), computed on the detector's detections (:func:`zerolabel.cad.
inference.detect`) against the labels of the held-out images. Each evaluation is logged as one
line and appended to ``validation.json`` next to the checkpoint. An evaluation asked to stop
(Ctrl-C, SIGTERM) gives up between two images and records nothing: the checkpoint it follows is
already written.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zerolabel.cad.config import CadConfig
from zerolabel.cad.data import CocoDetectionDataset
from zerolabel.cad.inference import detect
from zerolabel.cad.saving import write_json_atomically
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import GroundTruth, GtImage
from zerolabel.evaluation.metrics import Predictions, coco_metrics
from zerolabel.io.images import load_file

logger = logging.getLogger(__name__)

HISTORY_NAME = "validation.json"
AUTO_FRACTION = 0.1  # held out by default...
AUTO_MIN_IMAGES = 50  # ...from this many images on (fewer: all are trained on)


def split_image_ids(
    image_ids: Sequence[int], fraction: float | None, seed: int
) -> tuple[list[int], list[int]]:
    """``(training, validation)`` image ids: a seeded random ``fraction`` of the images held out.

    ``fraction`` None picks :data:`AUTO_FRACTION` from :data:`AUTO_MIN_IMAGES` images on, else
    0; a positive fraction holds out at least one image. Both lists keep the input order.

    Raises:
        ValueError: the fraction would leave no image to train on.
    """
    if fraction is None:
        fraction = AUTO_FRACTION if len(image_ids) >= AUTO_MIN_IMAGES else 0.0
    count = max(1, round(len(image_ids) * fraction)) if fraction > 0 else 0
    if count >= len(image_ids):
        raise ValueError(
            f"val_fraction {fraction} holds out all {len(image_ids)} images: lower it "
            "(--val-fraction), or 0 to train on every image"
        )
    held_out = set(random.Random(seed).sample(list(image_ids), count))
    training = [i for i in image_ids if i not in held_out]
    return training, [i for i in image_ids if i in held_out]


class Validator:
    """Evaluates the detector on the held-out images and keeps the history of the results."""

    def __init__(self, dataset: CocoDetectionDataset, out_dir: Path) -> None:
        self.dataset = dataset
        self.path = out_dir / HISTORY_NAME
        self.history: list[dict[str, Any]] = []

    def restart(self, start: int) -> None:
        """Keep the recorded results up to iteration ``start`` (those of the resumed run)."""
        self.history = [entry for entry in _read_history(self.path) if entry["iteration"] <= start]

    def __call__(
        self, model: nn.Module, iteration: int, stopping: Callable[[], bool] = lambda: False
    ) -> dict[str, float] | None:
        """Evaluate ``model`` (left in training mode), log one line, update the history file.

        Args:
            model: the detector, in training mode.
            iteration: the iteration the metrics are recorded at.
            stopping: asked before each image; when it answers True the evaluation is given up.

        Returns:
            The metrics, or None when the evaluation was given up (nothing is recorded).
        """
        try:
            with torch.random.fork_rng(devices=[]):
                detections = self._detections(model, stopping)
                metrics = None if detections is None else coco_metrics(*detections)
        finally:
            model.train()
        if metrics is None:
            logger.warning("validation at iteration %d given up: stop requested", iteration)
            return None
        images = len(self.dataset)
        logger.info(
            "validation at iteration %d (%d images): AP50 %s, AP %s, AR100 %s",
            iteration,
            images,
            *(_percent(metrics[name]) for name in ("ap50", "ap", "ar100")),
        )
        self.history.append({"iteration": iteration, "images": images, **metrics})
        write_json_atomically(self.path, self.history)
        return metrics

    def _detections(
        self, model: nn.Module, stopping: Callable[[], bool]
    ) -> tuple[Predictions, GroundTruth] | None:
        """Detections and labels of every held-out image; None once ``stopping()`` is True."""
        preds: Predictions = {}
        gt: GroundTruth = {}
        dataset = self.dataset
        for index, info in enumerate(dataset.images):
            if stopping():
                return None
            key = str(info["id"])  # ids, not file stems: stems may repeat across folders
            path = dataset.images_dir / info["file_name"]
            image = load_file(path, dataset.limits, max_side=dataset.max_side)
            found = detect(model, image)
            preds[key] = [(box, score) for box, score, _ in found]
            boxes = [_xywh_box(ann["bbox"]) for ann in dataset.annotations(index)]
            gt[key] = GtImage(info["file_name"], image.original_hw, boxes, ["object"] * len(boxes))
        return preds, gt


def validator_for(
    config: CadConfig, coco_json: Path, images_dir: Path, out_dir: Path, image_ids: list[int]
) -> Validator | None:
    """A :class:`Validator` over ``image_ids``, or None when there are none."""
    if not image_ids:
        return None
    dataset = CocoDetectionDataset(
        coco_json, images_dir, config.max_size, masks=False, image_ids=set(image_ids)
    )
    return Validator(dataset, out_dir)


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        logger.warning("%s is unreadable: starting a new validation history", path)
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("iteration"), int)]


def _xywh_box(bbox: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in bbox)
    return Box(x, y, x + w, y + h)


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"
