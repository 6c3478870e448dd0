"""Training-set writers for a :class:`~zerolabel.formats.dataset.Dataset`: COCO, YOLO, PASCAL VOC.

Each writer takes the dataset :func:`zerolabel.formats.export.read_ls_export` returns (or any
other) and ``class_agnostic``: one class ``"object"`` instead of one per label
(:func:`class_names`). Images without objects (negatives) are written like any other: a COCO
image without annotations, an empty YOLO label file, a VOC file without ``<object>``.

YOLO and VOC take ``images`` too (file name -> a local copy of the image, bytes as served): each
is placed in the layout (hard-linked, else copied byte for byte). When the images carry a
``split`` (:func:`zerolabel.formats.split.split_images`), YOLO puts labels and images under
``train/`` and ``val/`` and VOC lists both in ``ImageSets/Main``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from zerolabel.formats.coco import coco_annotation
from zerolabel.formats.dataset import Dataset, ImageRecord, ObjectRecord
from zerolabel.formats.reader import inside
from zerolabel.formats.split import SPLITS

logger = logging.getLogger(__name__)

ImageFiles = Mapping[str, Path]
"""An image's ``file_name`` -> a local file holding its bytes."""

AGNOSTIC_LABEL = "object"
"""The single class of class-agnostic exports."""


def class_names(ds: Dataset, *, class_agnostic: bool) -> list[str]:
    """``["object"]`` when class-agnostic, else the sorted labels; index i is YOLO class i."""
    if class_agnostic:
        return [AGNOSTIC_LABEL]
    return sorted({obj.label for image in ds.images for obj in image.objects})


def to_coco(ds: Dataset, *, class_agnostic: bool, split: str | None = None) -> dict[str, Any]:
    """A COCO instances dict (loads in ``pycocotools.coco.COCO``).

    Images and annotations count from 1; ``bbox`` is ``[x, y, w, h]`` in float pixels, masks
    are compressed RLE, ``area`` is the mask's pixel count (else the box's), ``iscrowd`` 0.
    Categories count from 1 in :func:`class_names` order (of the whole dataset, so every split
    has the same ids). Images keep ``ls_task_id``. With ``split``, only that split's images.
    """
    names = class_names(ds, class_agnostic=class_agnostic)
    category_ids = {name: i for i, name in enumerate(names, start=1)}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    chosen = [image for image in ds.images if split is None or image.split == split]
    for image_id, image in enumerate(chosen, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": image.file_name,
                "width": image.width,
                "height": image.height,
                "ls_task_id": image.task_id,
            }
        )
        for obj in image.objects:
            category = category_ids[AGNOSTIC_LABEL if class_agnostic else obj.label]
            ann = _coco_annotation(obj, image, image_id, category)
            annotations.append({"id": len(annotations) + 1, **ann})
    categories = [{"id": i, "name": n, "supercategory": "object"} for n, i in category_ids.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def _coco_annotation(
    obj: ObjectRecord, image: ImageRecord, image_id: int, category_id: int
) -> dict[str, Any]:
    return coco_annotation(
        obj.box,
        obj.mask,
        image_id=image_id,
        category_id=category_id,
        image_hw=(image.height, image.width),
        score=obj.score,
        where=image.file_name,
    )


def label_stems(ds: Dataset) -> list[str]:
    """Label-file path of each image without suffix: ``a/b.jpg`` -> ``a/b`` (folders kept).

    Raises:
        ValueError: two images would share a label file, or one would be ``classes.txt``.
    """
    stems = [str(PurePosixPath(image.file_name).with_suffix("")) for image in ds.images]
    seen: dict[str, str] = {}
    for stem, image in zip(stems, ds.images, strict=True):
        if stem in seen:
            raise ValueError(
                f"{seen[stem]!r} and {image.file_name!r} would share the label file {stem!r}"
            )
        seen[stem] = image.file_name
    if "classes" in seen:
        raise ValueError(f"{seen['classes']!r} would overwrite the YOLO classes.txt")
    return stems


def write_yolo(
    ds: Dataset, out_dir: str | Path, *, class_agnostic: bool, images: ImageFiles | None = None
) -> list[str]:
    """YOLO in the Ultralytics layout: ``labels/`` and ``images/`` side by side, ``data.yaml``.

    Label files ``labels/<stem>.txt`` hold lines ``cls cx cy w h``, normalised by the image size
    and written with 10 significant digits; an image without objects gets an empty file (a
    negative). ``labels/classes.txt`` lists the names. The images given are placed at
    ``images/<file_name>``. With a split, both go one folder down, ``train/`` or ``val/``.
    ``data.yaml`` gives ``path`` (this folder), ``train``, ``val`` (the train images again when
    there is no split) and ``names``; it is written only when images were placed, since
    Ultralytics reads the images it names (labels alone: a warning says so).

    Returns:
        The class names, index i being class i.
    """
    root = Path(out_dir)
    names = class_names(ds, class_agnostic=class_agnostic)
    index = {name: i for i, name in enumerate(names)}
    placed = 0
    for image, stem in zip(ds.images, label_stems(ds), strict=True):
        lines = []
        for obj in image.objects:
            b = obj.box
            cls = index[AGNOSTIC_LABEL if class_agnostic else obj.label]
            cx, cy = (b.x0 + b.x1) / 2 / image.width, (b.y0 + b.y1) / 2 / image.height
            w, h = b.width / image.width, b.height / image.height
            lines.append(f"{cls} {cx:.10g} {cy:.10g} {w:.10g} {h:.10g}\n")
        sub = image.split or ""
        path = inside(root / "labels", PurePosixPath(sub) / f"{stem}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        if images and image.file_name in images:
            target = inside(root / "images", PurePosixPath(sub) / image.file_name)
            place_image(images[image.file_name], target)
            placed += 1
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    if placed:
        _write_data_yaml(root, names, split=any(image.split for image in ds.images))
    elif ds.images:
        logger.warning(
            "%s: YOLO labels written without their images, so no data.yaml (it would name a "
            "missing images/ folder); export with the images (--download-images) to train on it",
            root,
        )
    return names


def _write_data_yaml(root: Path, names: list[str], *, split: bool) -> None:
    """Ultralytics' dataset file; values are JSON strings, which YAML reads as they are."""
    train, val = ("images/train", "images/val") if split else ("images", "images")
    lines = [
        f"path: {json.dumps(str(root.resolve()))}",
        f"train: {json.dumps(train)}",
        f"val: {json.dumps(val)}",
        "names:",
        *(f"  {i}: {json.dumps(name)}" for i, name in enumerate(names)),
    ]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")


def place_image(source: Path, target: Path) -> None:
    """Put the file ``source`` at ``target`` byte for byte: a hard link, else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if target.samefile(source):
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_voc(
    ds: Dataset, out_dir: str | Path, *, class_agnostic: bool, images: ImageFiles | None = None
) -> list[str]:
    """PASCAL VOC: ``Annotations/<stem>.xml``, ``JPEGImages/`` and ``ImageSets/Main/``.

    ``bndbox`` holds 1-based inclusive pixels, the inverse of the LOST reading in
    :func:`zerolabel.evaluation.ground_truth.read_voc`: ``xmin = round(x0) + 1``,
    ``xmax = round(x1)`` (same for y), rounding halves up, so whole-pixel boxes (masks' boxes)
    come back exactly and others within half a pixel; a box under one pixel wide is widened to one.
    An image without objects gets a file without ``<object>``. The images given are placed at
    ``JPEGImages/<file_name>``. ``ImageSets/Main/trainval.txt`` lists every image; with a
    split, ``train.txt`` and ``val.txt`` list each part.

    Returns:
        The class names used.
    """
    root = Path(out_dir)
    names = class_names(ds, class_agnostic=class_agnostic)
    stems = label_stems(ds)
    for image, stem in zip(ds.images, stems, strict=True):
        path = inside(root / "Annotations", f"{stem}.xml")
        path.parent.mkdir(parents=True, exist_ok=True)
        tree = ET.ElementTree(_voc_xml(image, class_agnostic))
        ET.indent(tree)
        tree.write(path, encoding="unicode")
        if images and image.file_name in images:
            place_image(images[image.file_name], inside(root / "JPEGImages", image.file_name))
    lists = root / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "trainval.txt").write_text("".join(f"{stem}\n" for stem in stems))
    if any(image.split for image in ds.images):
        for split in SPLITS:
            chosen = [s for s, im in zip(stems, ds.images, strict=True) if im.split == split]
            (lists / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in chosen))
    return names


def _voc_xml(image: ImageRecord, class_agnostic: bool) -> ET.Element:
    path = PurePosixPath(image.file_name)
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = str(path.parent) if path.parent.parts else ""
    ET.SubElement(ann, "filename").text = path.name
    size = ET.SubElement(ann, "size")
    for tag, number in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(number)
    ET.SubElement(ann, "segmented").text = "0"
    for obj in image.objects:
        node = ET.SubElement(ann, "object")
        ET.SubElement(node, "name").text = AGNOSTIC_LABEL if class_agnostic else obj.label
        for tag, text in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(node, tag).text = text
        bndbox = ET.SubElement(node, "bndbox")
        xs = _voc_span(obj.box.x0, obj.box.x1, image.width)
        ys = _voc_span(obj.box.y0, obj.box.y1, image.height)
        corners = {"xmin": xs[0], "ymin": ys[0], "xmax": xs[1], "ymax": ys[1]}
        for tag, number in corners.items():
            ET.SubElement(bndbox, tag).text = str(number)
    return ann


def _voc_span(start: float, end: float, limit: int) -> tuple[int, int]:
    """``(first, last)`` 1-based inclusive pixels of ``[start, end)``, at least one pixel."""
    first, stop = math.floor(start + 0.5), math.floor(end + 0.5)
    first, stop = min(max(first, 0), limit - 1), min(max(stop, 1), limit)
    if stop <= first:
        stop = first + 1
    return first + 1, stop
