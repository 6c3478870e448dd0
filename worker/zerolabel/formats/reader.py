"""Label Studio JSON export (a list of tasks) -> :class:`~zerolabel.formats.dataset.Dataset`.

:func:`read_ls_export` picks one result list per task:

- ``source="annotations"``: the latest annotation that was not cancelled. "Latest" is the
  greatest ``updated_at`` (else ``created_at``) when every candidate has one, else the last in
  list order. A task with no such annotation is skipped. An annotation with an empty result
  ("no objects here") is a negative example and is kept.
- ``source="predictions"``: the raw pseudo-labels, the latest prediction (same rule) of
  ``model_version``, or of any version when it is None.

Regions become objects through :func:`zerolabel.labelstudio.regions.read_objects`. An object
sent as a box and a mask is resolved there by what the annotator did to each shape, found
against the task's predictions (the annotation's parent prediction when known); a prediction is
read as made. Each resolution is counted in :attr:`Dataset.box_mask_conflicts`.

Image sizes come from the regions' ``original_width`` and ``original_height``. A result that
carries none (an empty one, a negative) is sized from the task's other annotations and
predictions, else by ``image_size`` (the image file itself), and the image records how
(:attr:`ImageRecord.size_from`); when nothing gives its size the task is skipped and reported.
A task whose regions disagree on the size or set ``image_rotation`` is skipped too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from zerolabel.errors import NoImageSize, RegionError
from zerolabel.formats.dataset import Dataset, ImageRecord, ObjectRecord, SkippedTask
from zerolabel.io.images import IMAGE_SUFFIXES
from zerolabel.labelstudio.regions import read_objects, result_image_hw
from zerolabel.labelstudio.versions import timestamp as _timestamp
from zerolabel.sites import LOCAL_FILES_PATH

logger = logging.getLogger(__name__)

SOURCES = ("annotations", "predictions")
"""Accepted values of ``source`` in :func:`read_ls_export`."""

DEFAULT_LABEL = "object"
"""Label of regions that carry none (plain ``Rectangle`` / ``Brush`` tags)."""

SIZE_FROM_TASK = "the task's other annotations/predictions"
""":attr:`ImageRecord.size_from` of an image sized from another result of its task."""

NO_SIZE = "no size info"
"""Part of the reason of every task skipped because its image size could not be known."""

ImageSizer = Callable[[str], tuple[tuple[int, int], str] | None]
"""Image URL -> ``((height, width), how)`` read from the image, or None when it is not at
hand; ``how`` names the source (e.g. ``"image file"``) in :attr:`ImageRecord.size_from`."""

SHOWN_IDS = 5
"""Task ids :func:`summarize_skipped` names per reason (debug logging lists every task)."""

SHOWN_REASONS = 3
"""Reasons :func:`summarize_skipped` names; the tasks skipped for others are counted."""


class _Skip(Exception):
    """A task cannot be exported; the message is the reason reported."""


def read_ls_export(
    data: list[dict[str, Any]],
    *,
    image_key: str | None = None,
    source: str = "annotations",
    model_version: str | None = None,
    image_size: ImageSizer | None = None,
) -> Dataset:
    """Objects of every task of a Label Studio JSON export (``exportType=JSON``).

    Args:
        data: the export: a list of tasks with ``id``, ``data``, ``annotations``, ``predictions``.
        image_key: the task data key of the image URL; by default :func:`detect_image_key`.
        source: ``"annotations"`` (human-corrected) or ``"predictions"`` (raw pseudo-labels).
        model_version: with ``source="predictions"``, use only predictions of this version.
        image_size: sizes the image of a result that carries no size, when the task's other
            results do not (see the module docstring).

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
            image = _read_task(task, key, source, model_version, dataset, image_size)
        except _Skip as skip:
            dataset.skipped.append(SkippedTask(task_id, str(skip)))
            logger.debug("task %s skipped: %s", task_id, skip)
            continue
        dataset.images.append(image)
    if dataset.skipped:
        logger.warning(
            "%d of %d task(s) not read from the %s: %s (zerolabel -v lists each)",
            len(dataset.skipped),
            len(data),
            source,
            summarize_skipped(dataset.skipped),
        )
    return dataset


def summarize_skipped(skipped: Sequence[SkippedTask]) -> str:
    """Skipped tasks in one line, grouped by reason (the commonest first), with the first
    few task ids of each: ``tasks 2, 4, 6, 8, 10 and 58 more: no annotation; task 9: ...``."""
    by_reason: dict[str, list[int | None]] = {}
    for task in skipped:
        by_reason.setdefault(task.reason, []).append(task.task_id)
    groups = sorted(by_reason.items(), key=lambda item: -len(item[1]))
    parts = [f"{_task_ids(ids)}: {reason}" for reason, ids in groups[:SHOWN_REASONS]]
    rest = groups[SHOWN_REASONS:]
    if rest:
        count = sum(len(ids) for _, ids in rest)
        parts.append(f"{count} more task(s) for {len(rest)} other reason(s)")
    return "; ".join(parts)


def _task_ids(ids: Sequence[int | None]) -> str:
    if len(ids) == 1:
        return f"task {ids[0]}"
    shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return f"tasks {shown}{more}"


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
    local = LOCAL_FILES_PATH.rstrip("/")
    return path.endswith(IMAGE_SUFFIXES) or local in path or "://" in url


def file_name_from_url(url: str) -> str:
    """The image's file name, as training code would find it next to the labels.

    ``/data/local-files/?d=a/b.jpg`` (with or without host) gives ``a/b.jpg``, the path under
    the local-files root; any other URL (uploads ``/data/upload/3/abcd-x.jpg``, http, s3)
    its last path component, unquoted (``abcd-x.jpg``). Separators are read after decoding
    (``%2F``, ``\\``), and ``..``, ``.`` and leading ``/`` are removed, so a name never leaves
    the folder it is joined to (writers check it again: :func:`inside`). Empty when nothing names
    a file.
    """
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith(LOCAL_FILES_PATH.rstrip("/")):
        local = parse_qs(parts.query).get("d")
        if local:
            return "/".join(_safe_parts(local[0]))
    last = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    kept = _safe_parts(last)
    return kept[-1] if kept else ""


def _safe_parts(path: str) -> list[str]:
    """The components of a decoded path, either separator, without ``/``, ``.`` and ``..``."""
    return [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("/", ".", "..")]


def inside(root: Path, name: str | PurePosixPath) -> Path:
    """``root / name``, refused unless it stays inside ``root`` once resolved.

    Raises:
        ValueError: the path would leave ``root`` (an absolute name, ``..``, a link out).
    """
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{str(name)!r} would be written outside {root}; refused")
    return path


def _read_task(
    task: Any,
    key: str,
    source: str,
    model_version: str | None,
    dataset: Dataset,
    image_size: ImageSizer | None,
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
    chosen = _choose(task, source, model_version)
    items = [item for item in chosen.get("result") or [] if isinstance(item, dict)]
    (height, width), size_from = _image_hw(task, items, image_size, url)
    before = _predicted_items(task, chosen) if source == "annotations" else _by_id(items)
    regions = read_objects(
        items,
        (height, width),
        dataset.dropped_regions,
        before=before,
        conflicts=dataset.box_mask_conflicts,
    )
    objects = [ObjectRecord(r.box, r.label or DEFAULT_LABEL, r.mask, r.score) for r in regions]
    return ImageRecord(file_name, width, height, objects, task.get("id"), size_from, url=url)


def _image_hw(
    task: dict[str, Any], items: list[dict[str, Any]], image_size: ImageSizer | None, url: str
) -> tuple[tuple[int, int], str | None]:
    """The image size and where it came from (None: from ``items`` themselves)."""
    try:
        return result_image_hw(items), None
    except NoImageSize:
        pass
    except RegionError as exc:
        raise _Skip(str(exc)) from None
    sizes = set()
    for kind in SOURCES:
        for entry in task.get(kind) or []:
            result = entry.get("result") if isinstance(entry, dict) else None
            try:
                sizes.add(result_image_hw([i for i in result or [] if isinstance(i, dict)]))
            except RegionError:
                continue
    if len(sizes) == 1:
        return sizes.pop(), SIZE_FROM_TASK
    found = image_size(url) if image_size is not None else None
    if found is not None:
        return found
    what = "negative (empty result)" if not items else "result"
    raise _Skip(
        f"{what} of {file_name_from_url(url)} with {NO_SIZE}: no result of the task gives one "
        "original_width/original_height, and its image was not at hand"
    )


def _predicted_items(task: dict[str, Any], annotation: dict[str, Any]) -> dict[str, Any]:
    """The items of the task's predictions by id (of the annotation's parent when known)."""
    predictions = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    parent = annotation.get("parent_prediction")
    if parent is not None:
        predictions = [p for p in predictions if p.get("id") == parent] or predictions
    return _by_id(item for p in predictions for item in p.get("result") or [])


def _by_id(items: Iterable[Any]) -> dict[str, Any]:
    """Result items by id (those without one left out)."""
    return {str(item["id"]): item for item in items if isinstance(item, dict) and item.get("id")}


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


def check_predictions(data: list[dict[str, Any]], model_version: str | None) -> None:
    """Refuse tasks whose predictions cannot be scored or exported as asked.

    Raises:
        ValueError: the predictions are listed by id only (Label Studio's export file), there
            are none, or none is of ``model_version`` (the message lists the versions present).
    """
    entries = [p for task in data if isinstance(task, dict) for p in task.get("predictions") or []]
    full = [p for p in entries if isinstance(p, dict)]
    if entries and not full:
        raise ValueError(
            "predictions are listed only by id (as in Label Studio's JSON export file): read "
            "the project instead (--project), or use an export with full predictions"
        )
    if not full:
        raise ValueError("the tasks hold no predictions: pre-label them first")
    versions = sorted({str(p.get("model_version")) for p in full})
    if model_version is not None and model_version not in versions:
        raise ValueError(
            f"model version {model_version!r} not found: the versions present are "
            + ", ".join(repr(v) for v in versions)
        )
