"""Discovery results -> COCO detection JSON (standard library, numpy and zerolabel.geometry only).

The dataset dict loads in ``pycocotools.coco.COCO`` and its annotations double as a results
list for ``COCO.loadRes``. Boxes are ``[x, y, width, height]`` in original pixels; masks are
compressed RLE ``{"size": [height, width], "counts": str}``. Everything is one category.
"""

from __future__ import annotations

from typing import Any

from zerolabel.contract import Box, DiscoveryResult, Region, Rle
from zerolabel.geometry import rle_area, rle_to_coco_string

CATEGORY_ID = 1


def coco_from_results(
    results: list[DiscoveryResult], file_names: list[str], category: str = "object"
) -> dict[str, Any]:
    """A COCO dataset dict of the discovered regions.

    Every image processed without error is listed, also when nothing was found in it; images
    whose result carries an ``error`` are left out. Image and annotation ids count from 1.

    Args:
        results: one discovery result per image.
        file_names: the ``file_name`` of each image, in the same order.
        category: name of the single category.

    Returns:
        ``{"images", "annotations", "categories"}``.

    Raises:
        ValueError: if the two lists differ in length or a mask does not fit its image.
    """
    if len(results) != len(file_names):
        raise ValueError(f"{len(results)} results but {len(file_names)} file names")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for result, file_name in zip(results, file_names, strict=True):
        if result.error is not None:
            continue
        image_id = len(images) + 1
        h, w = result.image_hw
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for region in result.regions:
            ann = _annotation(region, image_id, result.image_hw)
            annotations.append({"id": len(annotations) + 1, **ann})
    categories = [{"id": CATEGORY_ID, "name": category, "supercategory": "object"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _annotation(region: Region, image_id: int, image_hw: tuple[int, int]) -> dict[str, Any]:
    return coco_annotation(
        region.box,
        region.mask,
        image_id=image_id,
        category_id=CATEGORY_ID,
        image_hw=image_hw,
        score=region.score,
        where=f"image {image_id}",
    )


def coco_annotation(
    box: Box,
    mask: Rle | None,
    *,
    image_id: int,
    category_id: int,
    image_hw: tuple[int, int],
    score: float | None = None,
    where: str,
) -> dict[str, Any]:
    """One COCO annotation without its id: bbox xywh, and with a mask its compressed RLE and
    pixel-count area (else the box's area).

    Raises:
        ValueError: the mask is not the image's size (``where`` names the image).
    """
    ann: dict[str, Any] = {
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [box.x0, box.y0, box.width, box.height],
        "area": float(box.width * box.height),
        "iscrowd": 0,
    }
    if score is not None:
        ann["score"] = float(score)
    if mask is not None:
        if tuple(mask.size_hw) != tuple(image_hw):
            raise ValueError(
                f"{where}: mask is {mask.size_hw} (height, width) but the image is {image_hw}"
            )
        h, w = mask.size_hw
        ann["segmentation"] = {"size": [h, w], "counts": rle_to_coco_string(mask)}
        ann["area"] = float(rle_area(mask))
    return ann
