"""Tiny detector training data and configs shared by the CAD integration tests.

Three noisy dark 120x160 PNGs with bright rectangles, their segmentations written in the three
COCO ways, and a CPU configuration small enough for a step to take a moment.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from zerolabel.cad import CadConfig
from zerolabel.geometry import rle_encode, rle_to_coco_string

IMAGE_HW = (120, 160)
# Per image: the bright rectangles (x0, y0, x1, y1) and how each is written in the COCO file.
OBJECTS = {
    "two.png": [((20, 30, 70, 90), "rle"), ((100, 10, 150, 50), "polygon")],
    "one.png": [((40, 40, 120, 100), "uncompressed")],
    "none.png": [],
}


def tiny_config(masks: bool, **changes: Any) -> CadConfig:
    config = CadConfig(
        masks=masks,
        min_size=72,
        max_size=96,
        iterations=4,
        batch_size=2,
        lr=0.001,
        warmup_iterations=2,
        checkpoint_every=2,
        checkpoint_seconds=None,  # checkpoints by iteration only: the same in every test run
        trainable_backbone_layers=0,
        rois_per_image=64,
        proposals=100,
    )
    return replace(config, **changes)


def _segmentation(xyxy: tuple[int, int, int, int], kind: str) -> Any:
    x0, y0, x1, y1 = xyxy
    mask = np.zeros(IMAGE_HW, bool)
    mask[y0:y1, x0:x1] = True
    if kind == "polygon":
        return [[x0, y0, x1, y0, x1, y1, x0, y1]]
    rle = rle_encode(mask)
    if kind == "uncompressed":
        return rle.to_dict()
    return {"size": list(IMAGE_HW), "counts": rle_to_coco_string(rle)}


def write_tiny_coco(root: Path) -> Path:
    """Three noisy dark PNGs with bright rectangles in ``root``, and their ``coco.json``."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, objects) in enumerate(OBJECTS.items(), 1):
        pixels = rng.integers(0, 60, (*IMAGE_HW, 3), dtype=np.uint8)
        for (x0, y0, x1, y1), kind in objects:
            pixels[y0:y1, x0:x1] = (230, 200, 40)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                    "segmentation": _segmentation((x0, y0, x1, y1), kind),
                }
            )
        Image.fromarray(pixels).save(root / name)
        images.append({"id": image_id, "file_name": name, "height": 120, "width": 160})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "o"}]}
    (root / "coco.json").write_text(json.dumps(coco))
    return root
