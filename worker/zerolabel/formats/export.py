"""Label Studio JSON export -> training sets: COCO, YOLO and PASCAL VOC (stdlib and numpy).

Usage::

    tasks = json.loads(Path("project-1.json").read_text())  # GET /api/projects/1/export
    paths = export(tasks, "out", formats=("coco", "yolo"), class_agnostic=True)

Reading (:func:`read_ls_export`, :mod:`zerolabel.formats.reader`) picks one annotation or
prediction per task and turns its regions into objects through
:func:`zerolabel.labelstudio.regions.read_objects` (the reader clustering and project
evaluation use too): a rectangle gives a box (rotated ones their axis-aligned bounds, clipped to
the image), a brush a mask and its tight box; zerolabel's box and mask of one object merge into
one object when they agree, else the annotator's edit wins. Empty masks and boxes are dropped
and counted. Masks stay run-length encoded (:class:`~zerolabel.contract.Rle`).

Negatives (an annotation with an empty result) are kept in every format; their size comes from
the task's other results or the image (``image_size``), and a negative that cannot be sized is
skipped and reported by task id. :func:`write_dataset` writes any :class:`Dataset` with the
writers of :mod:`zerolabel.formats.writers`, optionally split into train and val
(:func:`~zerolabel.formats.split.split_images`) and with the images placed in the layouts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerolabel.formats.dataset import Dataset, ImageRecord, ObjectRecord, SkippedTask
from zerolabel.formats.reader import (
    DEFAULT_LABEL,
    NO_SIZE,
    SIZE_FROM_TASK,
    SOURCES,
    ImageSizer,
    check_predictions,
    detect_image_key,
    file_name_from_url,
    read_ls_export,
)
from zerolabel.formats.split import SPLITS, split_images
from zerolabel.formats.writers import (
    AGNOSTIC_LABEL,
    ImageFiles,
    class_names,
    label_stems,
    to_coco,
    write_voc,
    write_yolo,
)
from zerolabel.labelstudio.regions import BOX_TYPES, MASK_TYPES

__all__ = [
    "AGNOSTIC_LABEL",
    "BOX_TYPES",
    "DEFAULT_LABEL",
    "FORMATS",
    "MASK_TYPES",
    "NO_SIZE",
    "SIZE_FROM_TASK",
    "SOURCES",
    "Dataset",
    "ImageRecord",
    "ImageSizer",
    "ObjectRecord",
    "SkippedTask",
    "check_formats",
    "check_predictions",
    "class_names",
    "detect_image_key",
    "export",
    "file_name_from_url",
    "label_stems",
    "read_ls_export",
    "split_images",
    "to_coco",
    "write_dataset",
    "write_voc",
    "write_yolo",
]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "yolo", "voc")
"""Accepted values in ``formats`` of :func:`export`."""


# --- all at once ---------------------------------------------------------------------------


def export(
    data: list[dict[str, Any]],
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    class_agnostic: bool = True,
    *,
    image_key: str | None = None,
    source: str = "annotations",
    model_version: str | None = None,
    image_size: ImageSizer | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, Path]:
    """Read an export and write it (:func:`write_dataset`).

    Args:
        data: the Label Studio JSON export (list of tasks).
        out_dir: created if missing; existing files of the same names are overwritten.
        formats: any of :data:`FORMATS`.
        class_agnostic: one class ``"object"`` instead of one per label.
        image_key: see :func:`read_ls_export`.
        source: see :func:`read_ls_export`.
        model_version: see :func:`read_ls_export`.
        image_size: see :func:`read_ls_export`.
        val_fraction: share of the images for validation (0: no split).
        seed: seed of the split.

    Returns:
        See :func:`write_dataset`.

    Raises:
        ValueError: an unknown format, bad read arguments, predictions that cannot be read as
            asked (:func:`check_predictions`), a bad ``val_fraction``, or clashing label files
            (all checked before anything is written).
    """
    check_formats(formats)
    if source == "predictions":
        check_predictions(data, model_version)
    ds = read_ls_export(
        data,
        image_key=image_key,
        source=source,
        model_version=model_version,
        image_size=image_size,
    )
    if val_fraction:
        split_images(ds, val_fraction, seed)
    meta = {"source": source, "model_version": model_version}
    return write_dataset(ds, out_dir, formats, class_agnostic, meta=meta)


def check_formats(formats: Sequence[str]) -> None:
    """ValueError naming the formats that are not :data:`FORMATS`."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}: use {', '.join(FORMATS)}")


def write_dataset(
    ds: Dataset,
    out_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    class_agnostic: bool = True,
    *,
    images: ImageFiles | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``coco.json``, ``yolo/``, ``voc/`` and ``summary.json``.

    With a split (images carrying ``split``), ``coco_train.json`` and ``coco_val.json`` too
    (``coco.json`` keeps every image); YOLO and VOC split as :mod:`zerolabel.formats.writers`
    says. ``images`` (file name -> local file) are placed in the YOLO and VOC layouts.

    Returns:
        ``{"coco": .../coco.json, "yolo": .../yolo, "voc": .../voc, "summary": ...}`` for the
        formats written (and ``coco_train``, ``coco_val``); ``summary.json`` holds ``meta`` and
        :meth:`Dataset.summary`.

    Raises:
        ValueError: an unknown format or clashing label files (before anything is written).
    """
    check_formats(formats)
    if {"yolo", "voc"} & set(formats):
        label_stems(ds)  # fail before writing anything
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "coco" in formats:
        paths["coco"] = _write_json(root / "coco.json", to_coco(ds, class_agnostic=class_agnostic))
        if any(image.split for image in ds.images):
            for split in SPLITS:
                coco = to_coco(ds, class_agnostic=class_agnostic, split=split)
                paths[f"coco_{split}"] = _write_json(root / f"coco_{split}.json", coco)
    for name, writer in (("yolo", write_yolo), ("voc", write_voc)):
        if name in formats:
            paths[name] = root / name
            writer(ds, paths[name], class_agnostic=class_agnostic, images=images)
    summary = {**(meta or {}), **ds.summary()}
    paths["summary"] = root / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2))
    logger.info(
        "exported %d images (%d negatives), %d objects to %s (%d tasks skipped)",
        summary["images"],
        summary["negatives"],
        summary["objects"],
        root,
        len(ds.skipped),
    )
    return paths


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path
