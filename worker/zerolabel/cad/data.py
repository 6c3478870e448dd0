"""Training data of the detector: a COCO file's images and targets in torchvision's format.

Segmentations may be compressed or uncompressed RLE or polygons (:func:`segmentation_rle`, also
used by :mod:`zerolabel.cad.inference` to compare pseudo-labels with detections).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import Dataset

from zerolabel.io.images import ImageLimits, load_file

TrainingTarget = dict[str, Tensor]
"""One image's training target, as torchvision detectors take it: ``boxes``, ``labels``,
optionally ``masks``."""


class CocoDetectionDataset(Dataset[tuple[Tensor, TrainingTarget]]):
    """Images and targets of a COCO file, in torchvision's detection format.

    ``dataset[i]`` is ``(image, target)``: image [3, h, w] float in [0, 1]; target ``boxes``
    [n, 4] float xyxy, ``labels`` [n] int64 (all 1) and, with ``masks``, ``masks`` [n, h, w]
    uint8. Images are loaded with EXIF orientation and shrunk so that the longer side is at most
    ``max_side`` (never enlarged); targets follow. Every listed image is kept, also without
    annotations (``boxes`` [0, 4]); ``iscrowd`` annotations and empty boxes are skipped.
    Segmentations may be compressed or uncompressed RLE or polygons; an annotation without one
    gets its filled box as mask. ``image_ids`` keeps only those images (a training or
    validation split), in file order.
    """

    def __init__(
        self,
        coco_json: str | Path,
        images_dir: str | Path,
        max_side: int,
        *,
        masks: bool = False,
        limits: ImageLimits | None = None,
        image_ids: Collection[int] | None = None,
    ) -> None:
        coco = json.loads(Path(coco_json).read_text(encoding="utf-8"))
        self.images: list[dict[str, Any]] = [
            image for image in coco["images"] if image_ids is None or image["id"] in image_ids
        ]
        self.images_dir = Path(images_dir)
        self.max_side = max_side
        self.masks = masks
        self.limits = limits or ImageLimits()
        self._annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in coco.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if not ann.get("iscrowd", 0) and w > 0 and h > 0:
                self._annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def annotations(self, index: int) -> list[dict[str, Any]]:
        """The COCO annotations of image ``index`` that are trained on (no crowd, no empty box)."""
        return list(self._annotations[self.images[index]["id"]])

    def __getitem__(self, index: int) -> tuple[Tensor, TrainingTarget]:
        info = self.images[index]
        loaded = load_file(self.images_dir / info["file_name"], self.limits, max_side=self.max_side)
        coco_hw = (info.get("height"), info.get("width"))
        if None not in coco_hw and coco_hw != loaded.original_hw:
            raise ValueError(
                f"{loaded.source}: the COCO file says {coco_hw[1]}x{coco_hw[0]} but the image is "
                f"{loaded.original_hw[1]}x{loaded.original_hw[0]} (after EXIF orientation)"
            )
        out_hw = _fit(loaded.original_hw, self.max_side)
        resized = Image.fromarray(loaded.pixels).resize(out_hw[::-1], Image.Resampling.BILINEAR)
        image = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255.0)
        return image, self._target(self._annotations[info["id"]], loaded.original_hw, out_hw)

    def _target(
        self, anns: list[dict[str, Any]], original_hw: tuple[int, int], out_hw: tuple[int, int]
    ) -> TrainingTarget:
        (height, width), (out_h, out_w) = original_hw, out_hw
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
        boxes *= torch.tensor([out_w / width, out_h / height, out_w / width, out_h / height])
        limit = torch.tensor([out_w, out_h, out_w, out_h], dtype=torch.float32)
        boxes = boxes.clamp(min=torch.zeros(4), max=limit)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # not outside the image
        target = {"boxes": boxes[keep], "labels": torch.ones(int(keep.sum()), dtype=torch.int64)}
        if self.masks:
            masks = [_resize_mask(_decode_segmentation(a, original_hw), out_hw) for a in anns]
            stacked = np.stack(masks) if masks else np.zeros((0, out_h, out_w), np.uint8)
            target["masks"] = torch.from_numpy(stacked)[keep]
        return target


def _fit(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept, never enlarged."""
    scale = min(1.0, max_side / max(hw))
    return (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))


def _decode_segmentation(ann: dict[str, Any], hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """[H, W] uint8 mask of an annotation: RLE, polygons, or its box when it has neither."""
    segmentation = ann.get("segmentation")
    if not segmentation:
        mask = np.zeros(hw, np.uint8)
        x, y, w, h = ann["bbox"]
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        return mask
    rle = segmentation_rle(segmentation, hw)
    if list(rle["size"]) != list(hw):
        raise ValueError(f"annotation {ann.get('id')}: mask is {rle['size']}, image is {hw}")
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def _resize_mask(mask: npt.NDArray[np.uint8], out_hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    if mask.shape == out_hw:
        return mask
    resized = Image.fromarray(mask).resize(out_hw[::-1], Image.Resampling.NEAREST)
    return np.array(resized, dtype=np.uint8)


def segmentation_rle(segmentation: Any, hw: tuple[int, int]) -> dict[str, Any]:
    """pycocotools RLE of a COCO segmentation: compressed or uncompressed RLE, or polygons."""
    rle: dict[str, Any] = segmentation
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, *hw))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, *hw)
    return rle
