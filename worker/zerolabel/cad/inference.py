"""Run a trained detector on an image, and turn its detections into the next pseudo-labels.

**Region scores.** Served as the ``cad`` method, a detection's score is its confidence
rescaled from the detection threshold to [0, 1] (:func:`rescaled_confidence`), so that scores
spread where a detector's confidences crowd just above its threshold.

**Self-training.** :func:`self_training_round` turns one round's detections into the next
round's pseudo-labels (scores ≥ 0.7, then 0.65), keeping earlier labels the detector missed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from pycocotools import mask as mask_utils
from torch import Tensor, nn

from zerolabel.cad.data import segmentation_rle
from zerolabel.contract import Box
from zerolabel.formats.coco import CATEGORY_ID, coco_annotation
from zerolabel.geometry import box_iou, rle_encode
from zerolabel.io.images import LoadedImage

MASK_THRESHOLD = 0.5  # mask probability above which a pixel belongs to the object

Detection = tuple[Box, float, npt.NDArray[np.bool_] | None]
"""A box in original-image pixels, its score in [0, 1] and its [H, W] mask (None without)."""


@torch.inference_mode()
def detect(
    model: nn.Module,
    image: LoadedImage,
    *,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> list[Detection]:
    """Run the detector on one image (puts the model in eval mode).

    Args:
        model: a detector from :func:`load_detector` or :func:`build_detector`.
        image: RGB pixels; they may be smaller than ``original_hw`` (reduced JPEG decode).
        score_threshold: keep detections scoring above this.
        max_detections: keep at most this many, best first.

    Returns:
        (box, score, mask) per detection, best first: boxes in original-image pixels clipped to
        the image, masks [H, W] bool at the original size (None for a Faster R-CNN).
    """
    heads: Any = model.roi_heads  # RoIHeads: its thresholds are plain attributes
    device = next(model.parameters()).device
    pixels = torch.tensor(image.pixels, device=device)  # a copy: decoded pixels are read-only
    tensor = pixels.permute(2, 0, 1).float().div(255.0)
    saved = heads.score_thresh, heads.detections_per_img
    heads.score_thresh, heads.detections_per_img = score_threshold, max_detections
    try:
        output = model.eval()([tensor])[0]
    finally:
        heads.score_thresh, heads.detections_per_img = saved
    return _to_original(output, tuple(image.pixels.shape[:2]), image.original_hw)


def rescaled_confidence(score: float, threshold: float) -> float:
    """A detection's confidence mapped from ``[threshold, 1]`` onto [0, 1].

    :func:`detect` keeps detections scoring above ``score_threshold``, so every kept
    confidence lies in ``(threshold, 1]``, and a detector's many weak detections crowd just
    above the threshold. ``(score - threshold) / (1 - threshold)`` spreads them over [0, 1]
    and keeps their order: a detection at the threshold, one the detector barely kept, scores
    0 like a task where nothing was found, and a certain one 1. Region and task scores of the
    detector then span the same range as those of the feature methods.

    Args:
        score: the detector's confidence, in [0, 1].
        threshold: the ``score_threshold`` the detection was kept with, in [0, 1].

    Returns:
        The rescaled confidence in [0, 1] (0 below the threshold; with threshold 1, where
        nothing passes, 1 for a score of 1).

    Raises:
        ValueError: a score or threshold outside [0, 1] (NaN included).
    """
    for name, value in (("score", score), ("threshold", threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"detection {name} must lie in [0, 1], got {value}")
    if threshold >= 1.0:
        return 1.0 if score >= 1.0 else 0.0
    return max(0.0, (score - threshold) / (1.0 - threshold))


def _to_original(
    output: dict[str, Tensor], pixels_hw: tuple[int, ...], original_hw: tuple[int, int]
) -> list[Detection]:
    """Scale boxes from input pixels to the original image; resize and threshold masks."""
    (h, w), (height, width) = pixels_hw, original_hw
    scale = torch.tensor([width / w, height / h, width / w, height / h])
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = (output["boxes"].float().cpu() * scale).clamp(min=torch.zeros(4), max=limit)
    detections: list[Detection] = []
    for i, (xyxy, score) in enumerate(zip(boxes.tolist(), output["scores"].tolist(), strict=True)):
        mask = None
        if "masks" in output:
            probability = output["masks"][i : i + 1].float()  # [1, 1, h, w]
            if (h, w) != (height, width):
                probability = nn.functional.interpolate(
                    probability, size=(height, width), mode="bilinear", align_corners=False
                )
            mask = (probability[0, 0] > MASK_THRESHOLD).cpu().numpy()
        detections.append((Box.from_list(xyxy), float(score), mask))
    return detections


def self_training_round(
    previous: Mapping[str, Any],
    detections: Mapping[int, Sequence[Detection]],
    *,
    score_threshold: float = 0.7,
    merge_iou: float = 0.5,
) -> dict[str, Any]:
    """The next round's pseudo-labels: confident detections plus earlier labels they miss.

    CutLER's self-training step: the detector trained on ``previous`` runs on the same images;
    its detections scoring at least ``score_threshold`` become labels, and every previous label
    whose IoU with all of them stays below ``merge_iou`` is carried over, so objects the detector
    has not learnt yet are not forgotten. Run it with 0.7, then 0.65, as CutLER does.

    Args:
        previous: COCO dict of the labels the detector was trained on (with image sizes).
        detections: per COCO image id, the output of :func:`detect` on that image; images
            missing here keep all their previous labels.
        score_threshold: lowest score of a detection kept as a label.
        merge_iou: overlap (mask IoU when both have masks, else box IoU) from which a previous
            label counts as found again and is dropped in favour of the detection.

    Returns:
        A new COCO dict with the images and categories of ``previous``; per image, the kept
        detections (with ``score``, and compressed-RLE masks when they have masks) then the
        carried-over labels; annotation ids renumbered from 1.

    Raises:
        ValueError: detections for an image id not in ``previous``, or a mask whose size is not
            its image's.
    """
    images = {image["id"]: image for image in previous["images"]}
    unknown = sorted(set(detections) - set(images))
    if unknown:
        raise ValueError(f"detections for image ids {unknown[:8]} that the COCO dict lacks")
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in previous.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    annotations: list[dict[str, Any]] = []  # ids set at the end
    for image_id, image in images.items():
        hw = (int(image["height"]), int(image["width"]))
        found = [d for d in detections.get(image_id, ()) if d[1] >= score_threshold]
        kept = [_detection_annotation(d, image_id, hw) for d in found]
        carried = [a for a in by_image[image_id] if _best_iou(a, kept, hw) < merge_iou]
        annotations += kept + carried
    return {
        **previous,
        "images": [dict(image) for image in previous["images"]],
        "annotations": [{**ann, "id": i} for i, ann in enumerate(annotations, 1)],
    }


def _detection_annotation(
    detection: Detection, image_id: int, hw: tuple[int, int]
) -> dict[str, Any]:
    """A COCO annotation (without id), built by :func:`zerolabel.formats.coco.coco_annotation`."""
    box, score, mask = detection
    return coco_annotation(
        box,
        rle_encode(mask) if mask is not None else None,
        image_id=image_id,
        category_id=CATEGORY_ID,
        image_hw=hw,
        score=score,
        where=f"image {image_id}",
    )


def _best_iou(ann: dict[str, Any], kept: list[dict[str, Any]], hw: tuple[int, int]) -> float:
    """Highest IoU of a previous label with the kept detections (mask IoU where both have one)."""
    best = 0.0
    rle = segmentation_rle(ann["segmentation"], hw) if ann.get("segmentation") else None
    for det in kept:
        if rle is not None and "segmentation" in det:
            iou = float(mask_utils.iou([det["segmentation"]], [rle], [0])[0][0])
        else:
            iou = box_iou(_xywh_box(ann["bbox"]), _xywh_box(det["bbox"]))
        best = max(best, iou)
    return best


def _xywh_box(bbox: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in bbox)
    return Box(x, y, x + w, y + h)
