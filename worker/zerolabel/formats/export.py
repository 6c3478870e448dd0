"""Label Studio JSON export -> training sets: COCO, YOLO and PASCAL VOC (stdlib and numpy).

Usage::

    tasks = json.loads(Path("project-1.json").read_text())  # GET /api/projects/1/export
    paths = export(tasks, "out", formats=("coco", "yolo"), class_agnostic=True)

Reading (:func:`read_ls_export`) picks one result list per task:

- ``source="annotations"``: the latest annotation that was not cancelled. "Latest" is the
  greatest ``updated_at`` (else ``created_at``) when every candidate has one, else the last in
  list order. A task with no such annotation is skipped, never exported as an empty image.
- ``source="predictions"``: the raw pseudo-labels, the latest prediction (same rule) of
  ``model_version``, or of any version when it is None.

Regions become objects through :func:`zerolabel.labelstudio.regions.read_objects` (the
reader clustering and project evaluation use too): a rectangle gives a box (rotated ones their
axis-aligned bounds, clipped to the image), a brush a mask and its tight box; zerolabel's box
and mask of one object merge into one object. Empty masks and boxes are dropped and counted.
Masks stay run-length encoded (:class:`~zerolabel.contract.Rle`), never a pixel array per mask.

The writers (:mod:`zerolabel.formats.writers`) take any :class:`Dataset`. Sizes come from the
regions' ``original_width`` and ``original_height``; a task whose regions carry none (e.g. an
empty annotation), disagree, or set ``image_rotation`` is skipped, and :attr:`Dataset.skipped`
says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from zerolabel.formats.dataset import Dataset, ImageRecord, ObjectRecord, SkippedTask
from zerolabel.formats.writers import (
    AGNOSTIC_LABEL,
    class_names,
    label_stems,
    to_coco,
    write_voc,
    write_yolo,
)
from zerolabel.labelstudio.regions import (
    BOX_TYPES,
    MASK_TYPES,
    RegionError,
    read_objects,
    result_image_hw,
)

__all__ = [
    "AGNOSTIC_LABEL",
    "BOX_TYPES",
    "DEFAULT_LABEL",
    "FORMATS",
    "MASK_TYPES",
    "SOURCES",
    "Dataset",
    "ImageRecord",
    "ObjectRecord",
    "SkippedTask",
    "class_names",
    "detect_image_key",
    "export",
    "file_name_from_url",
    "label_stems",
    "read_ls_export",
    "to_coco",
    "write_voc",
    "write_yolo",
]

logger = logging.getLogger(__name__)

SOURCES = ("annotations", "predictions")
"""Accepted values of ``source`` in :func:`read_ls_export`."""

FORMATS = ("coco", "yolo", "voc")
"""Accepted values in ``formats`` of :func:`export`."""

DEFAULT_LABEL = "object"
"""Label of regions that carry none (plain ``Rectangle`` / ``Brush`` tags)."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


class _Skip(Exception):
    """A task cannot be exported; the message is the reason reported."""


# --- reading -------------------------------------------------------------------------------


def read_ls_export(
    data: list[dict[str, Any]],
    *,
    image_key: str | None = None,
    source: str = "annotations",
    model_version: str | None = None,
) -> Dataset:
    """Objects of every task of a Label Studio JSON export (``exportType=JSON``).

    Args:
        data: the export: a list of tasks with ``id``, ``data``, ``annotations``, ``predictions``.
        image_key: the task data key of the image URL; by default :func:`detect_image_key`.
        source: ``"annotations"`` (human-corrected) or ``"predictions"`` (raw pseudo-labels).
        model_version: with ``source="predictions"``, use only predictions of this version.

    Returns:
        The dataset, tasks in export order; skipped tasks and dropped regions listed in it.

    Raises:
        TypeError: ``data`` is not a list of tasks.
        ValueError: an unknown ``source``, or ``model_version`` with annotations.
    """
    if not isinstance(data, list):
        raise TypeError(f"expected the list of tasks of a JSON export, got {type(data).__name__}")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {', '.join(SOURCES)}")
    if model_version is not None and source != "predictions":
        raise ValueError("model_version selects predictions: pass source='predictions' too")
    key = image_key or detect_image_key(data)
    dataset = Dataset(images=[])
    for task in data:
        task_id = task.get("id") if isinstance(task, dict) else None
        try:
            dataset.images.append(_read_task(task, key, source, model_version, dataset))
        except _Skip as skip:
            dataset.skipped.append(SkippedTask(task_id, str(skip)))
            logger.warning("task %s skipped: %s", task_id, skip)
    return dataset


def detect_image_key(data: Sequence[Any]) -> str:
    """The image key of the first task's data: ``image`` if there, else its one URL-like value.

    Raises:
        ValueError: the first task holds several URL-like values and none is ``image``.
    """
    first = data[0].get("data") if data and isinstance(data[0], dict) else None
    if not isinstance(first, dict):
        return "image"
    strings: dict[str, str] = {str(k): v for k, v in first.items() if isinstance(v, str)}
    if "image" in strings or not strings:
        return "image"
    if len(strings) == 1:
        return next(iter(strings))
    urls = [k for k, v in strings.items() if _looks_like_image(v)]
    if len(urls) != 1:
        raise ValueError(f"cannot tell the image key among {sorted(strings)}: pass image_key=")
    return urls[0]


def _looks_like_image(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return path.endswith(_IMAGE_SUFFIXES) or "/data/local-files" in path or "://" in url


def file_name_from_url(url: str) -> str:
    """The image's file name, as training code would find it next to the labels.

    ``/data/local-files/?d=a/b.jpg`` (with or without host) gives ``a/b.jpg``, the path under
    the local-files root; any other URL (uploads ``/data/upload/3/abcd-x.jpg``, http, s3)
    its last path component, unquoted (``abcd-x.jpg``). ``..`` and leading ``/`` are removed,
    so writers never leave their folder. Empty when nothing names a file.
    """
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/data/local-files"):
        local = parse_qs(parts.query).get("d")
        if local:
            kept = [p for p in PurePosixPath(local[0]).parts if p not in ("/", ".", "..")]
            return "/".join(kept)
    return unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])


def _read_task(
    task: Any, key: str, source: str, model_version: str | None, dataset: Dataset
) -> ImageRecord:
    """One task -> ImageRecord; raises _Skip with the reason when it cannot be exported."""
    if not isinstance(task, dict):
        raise _Skip(f"not a task object: {type(task).__name__}")
    data = task.get("data")
    url = data.get(key) if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        raise _Skip(f"no image URL under data[{key!r}]")
    file_name = file_name_from_url(url)
    if not file_name:
        raise _Skip(f"no file name in the image URL {url!r}")
    result = _choose(task, source, model_version).get("result") or []
    items = [item for item in result if isinstance(item, dict)]
    try:
        height, width = result_image_hw(items)
    except RegionError as exc:
        raise _Skip(str(exc)) from None
    objects = [
        ObjectRecord(r.box, r.label or DEFAULT_LABEL, r.mask, r.score)
        for r in read_objects(items, (height, width), dataset.dropped_regions)
    ]
    return ImageRecord(file_name, width, height, objects, task.get("id"))


def _choose(task: dict[str, Any], source: str, model_version: str | None) -> dict[str, Any]:
    """The annotation or prediction to export (see the module docstring)."""
    items = [i for i in task.get(source) or [] if isinstance(i, dict)]
    if source == "annotations":
        live = [i for i in items if not i.get("was_cancelled")]
        if not live:
            raise _Skip("all annotations cancelled" if items else "no annotation")
        return _latest(live)
    if model_version is not None:
        items = [i for i in items if i.get("model_version") == model_version]
    if not items:
        if task.get(source) and not any(isinstance(i, dict) for i in task[source]):
            raise _Skip("predictions listed by id only (a file export): read the project instead")
        version = "" if model_version is None else f" of model_version {model_version!r}"
        raise _Skip(f"no prediction{version}")
    return _latest(items)


def _latest(items: list[dict[str, Any]]) -> dict[str, Any]:
    """By timestamp when all have one (ties: later in list), else the last in the list."""
    stamped = [(ts, i) for i, item in enumerate(items) if (ts := _timestamp(item)) is not None]
    if len(stamped) == len(items):
        return items[max(stamped)[1]]
    return items[-1]


def _timestamp(item: dict[str, Any]) -> datetime | None:
    """``updated_at``, else ``created_at``, as an aware datetime (naive ones taken as UTC)."""
    text = item.get("updated_at") or item.get("created_at")
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


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
) -> dict[str, Path]:
    """Read an export and write ``coco.json``, ``yolo/``, ``voc/`` and ``summary.json``.

    Args:
        data: the Label Studio JSON export (list of tasks).
        out_dir: created if missing; existing files of the same names are overwritten.
        formats: any of :data:`FORMATS`.
        class_agnostic: one class ``"object"`` instead of one per label.
        image_key: see :func:`read_ls_export`.
        source: see :func:`read_ls_export`.
        model_version: see :func:`read_ls_export`.

    Returns:
        ``{"coco": .../coco.json, "yolo": .../yolo, "voc": .../voc, "summary": ...}`` for the
        formats written; ``summary.json`` holds :meth:`Dataset.summary`.

    Raises:
        ValueError: an unknown format, bad read arguments, or clashing label files (checked
            before anything is written).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}: use {', '.join(FORMATS)}")
    ds = read_ls_export(data, image_key=image_key, source=source, model_version=model_version)
    if {"yolo", "voc"} & set(formats):
        label_stems(ds)  # fail before writing anything
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "coco" in formats:
        paths["coco"] = root / "coco.json"
        paths["coco"].write_text(json.dumps(to_coco(ds, class_agnostic=class_agnostic)))
    for name, writer in (("yolo", write_yolo), ("voc", write_voc)):
        if name in formats:
            paths[name] = root / name
            writer(ds, paths[name], class_agnostic=class_agnostic)
    summary = {"source": source, "model_version": model_version, **ds.summary()}
    paths["summary"] = root / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2))
    logger.info(
        "exported %d images, %d objects to %s (%d tasks skipped)",
        summary["images"],
        summary["objects"],
        root,
        len(ds.skipped),
    )
    return paths
