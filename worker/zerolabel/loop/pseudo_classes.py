"""Pseudo-classes for the objects of Label Studio tasks: describe, cluster, relabel.

Works on task JSON as Label Studio exports it (and as ``zerolabel predict`` writes it), so a
folder run and a project run share everything but image access. Objects and their boxes come
from :func:`zerolabel.labelstudio.regions.read_objects`, the reader export uses, so the crop
described is the box export writes: an object sent as its brush alone is cropped at the mask's
tight box, a box region and the brush region of the same zerolabel object (ids
``zl-<hash>-<n>-box`` / ``-mask``) are one object, other regions objects of their own. Labels
are keyed by (task index, object key), so objects whose descriptor fails never shift anyone
else's label, and :func:`relabel` writes an object's label into each of its regions.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zerolabel.contract import Box
from zerolabel.errors import DiscoveryError, RegionError
from zerolabel.io.images import LoadedImage
from zerolabel.labelstudio.regions import object_key, read_objects, result_image_hw
from zerolabel.loop.clustering import ObjectClusters, cluster_objects
from zerolabel.progress import stage, track
from zerolabel.vit.backbone import Backbone
from zerolabel.vit.descriptors import DescriptorCache

logger = logging.getLogger(__name__)

ObjectId = tuple[int, str]  # (task index, object key)
_LABEL_KEYS = {"rectanglelabels": "rectanglelabels", "brushlabels": "brushlabels"}


__all__ = [
    "ClusterRun",
    "ObjectId",
    "chosen_prediction",
    "cluster_tasks",
    "describe_tasks",
    "labelled_tasks",
    "map_task_labels",
    "object_boxes",
    "object_key",
    "relabel",
    "update_predictions",
]


def chosen_prediction(task: dict[str, Any], model_version: str | None) -> dict[str, Any] | None:
    """The task's prediction of ``model_version`` (default: the last one)."""
    predictions = [
        p
        for p in task.get("predictions") or []
        if isinstance(p, dict)
        and (model_version is None or p.get("model_version") == model_version)
    ]
    return predictions[-1] if predictions else None


def object_boxes(result: Sequence[dict[str, Any]]) -> dict[str, Box]:
    """Object key -> box in original pixels, as export reads it.

    The rectangle's box (rotated: its axis-aligned bounds), else the mask's tight box, clipped
    to the image; when several objects share a key, the first one's. Unreadable regions are
    left out.

    Raises:
        RegionError: the regions carry no usable image size (see
            :func:`~zerolabel.labelstudio.regions.result_image_hw`).
    """
    items = [item for item in result if isinstance(item, dict)]
    if not items:
        return {}
    boxes: dict[str, Box] = {}
    for region in read_objects(items, result_image_hw(items)):
        boxes.setdefault(region.key, region.box)
    return boxes


def relabel(result: Sequence[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """A copy of ``result`` whose box and brush regions carry their object's new label."""
    updated = copy.deepcopy(list(result))
    for item in updated:
        name = labels.get(object_key(str(item.get("id"))))
        key = _LABEL_KEYS.get(str(item.get("type")))
        if name is not None and key is not None:
            item["value"][key] = [name]
    return updated


@dataclass
class ClusterRun:
    """Labels per object, the cluster names, and what could not be described."""

    labels: dict[ObjectId, str | None]
    names: list[str]
    failures: list[tuple[int, str]] = field(default_factory=list)  # (task index, reason)

    def sizes(self) -> Counter[str]:
        return Counter(name for name in self.labels.values() if name is not None)


def describe_tasks(
    tasks: Sequence[dict[str, Any]],
    load_image: Callable[[dict[str, Any]], LoadedImage],
    backbone: Backbone,
    cache: DescriptorCache,
    *,
    model_version: str | None = None,
) -> tuple[list[tuple[ObjectId, Any]], list[tuple[int, str]]]:
    """(object id, descriptor or None) for every object, plus per-task failures."""
    items: list[tuple[ObjectId, Any]] = []
    failures: list[tuple[int, str]] = []
    for index, task in enumerate(track(tasks, "describing objects", unit="image")):
        prediction = chosen_prediction(task, model_version)
        if prediction is None:
            continue
        try:
            boxes = object_boxes(prediction.get("result") or [])
        except RegionError as exc:
            failures.append((index, str(exc)))
            logger.warning("task %s: regions not read: %s", task.get("id"), exc)
            continue
        if not boxes:
            continue
        try:
            image = load_image(task)
            rows = cache.get_or_compute(backbone, image, list(boxes.values()))
        except (DiscoveryError, ValueError, OSError) as exc:
            failures.append((index, str(exc)))
            logger.warning("task %s: objects not described: %s", task.get("id"), exc)
            items.extend(((index, key), None) for key in boxes)
            continue
        items.extend(((index, key), row) for key, row in zip(boxes, rows, strict=True))
    return items, failures


def cluster_tasks(
    tasks: Sequence[dict[str, Any]],
    load_image: Callable[[dict[str, Any]], LoadedImage],
    backbone: Backbone,
    cache: DescriptorCache,
    *,
    k: int | None = None,
    seed: int = 0,
    model_version: str | None = None,
) -> ClusterRun:
    """Describe every object and cluster them (k suggested from the data when None)."""
    items, failures = describe_tasks(
        tasks, load_image, backbone, cache, model_version=model_version
    )
    if not any(row is not None for _, row in items):
        raise DiscoveryError("no object could be described: nothing to cluster")
    described = sum(row is not None for _, row in items)
    with stage(f"clustering {described} objects", done="clustered"):
        clusters: ObjectClusters[ObjectId] = cluster_objects(items, k=k, seed=seed)
    return ClusterRun(dict(clusters.labels), list(clusters.names), failures)


def labelled_tasks(
    tasks: Sequence[dict[str, Any]], run: ClusterRun, *, model_version: str | None = None
) -> list[dict[str, Any]]:
    """Copies of the tasks whose chosen prediction carries the cluster labels."""
    out = copy.deepcopy(list(tasks))
    for index, task in enumerate(out):
        prediction = chosen_prediction(task, model_version)
        if prediction is None:
            continue
        labels = {key: name for (i, key), name in run.labels.items() if i == index and name}
        prediction["result"] = relabel(prediction.get("result") or [], labels)
    return out


def map_task_labels(
    tasks: Sequence[dict[str, Any]], mapping: dict[str, str], *, model_version: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rename or merge clusters in already labelled tasks (no features recomputed).

    A mapping key no region carries while its new name is carried was applied before: running
    the same mapping twice leaves the tasks as the first run left them.

    Returns:
        Copies of the tasks relabelled, and the mapping keys some region carried (empty: the
        whole mapping had been applied already and the copies equal the tasks).

    Raises:
        ValueError: an empty new name, or a mapping key that no region carries and whose new
            name no region carries either (a typo in the mapping file).
    """
    empty = sorted(key for key, name in mapping.items() if not name)
    if empty:
        raise ValueError(f"the mapping gives an empty name to {', '.join(empty)}")
    out = copy.deepcopy(list(tasks))
    seen: set[str] = set()
    for task in out:
        prediction = chosen_prediction(task, model_version)
        for item in (prediction or {}).get("result") or []:
            key = _LABEL_KEYS.get(str(item.get("type")))
            if key is None:
                continue
            seen.update(item["value"].get(key) or [])
            item["value"][key] = [mapping.get(v, v) for v in item["value"].get(key) or []]
    unknown = sorted(key for key, name in mapping.items() if key not in seen and name not in seen)
    if unknown:
        raise ValueError(
            f"mapping names clusters no region carries: {', '.join(unknown)} "
            f"(labels in use: {', '.join(sorted(seen)) or 'none'})"
        )
    return out, [key for key in mapping if key in seen]


def update_predictions(
    client: Any,
    before: Sequence[dict[str, Any]],
    after: Sequence[dict[str, Any]],
    model_version: str | None,
) -> int:
    """PATCH every project prediction whose result differs between ``before`` and ``after``
    (the same tasks, relabelled); returns how many were updated."""
    updated = 0
    pairs = zip(before, after, strict=True)
    for old, new in track(pairs, "updating predictions", total=len(before), unit="task"):
        old_pred = chosen_prediction(old, model_version)
        new_pred = chosen_prediction(new, model_version)
        if old_pred and new_pred and old_pred.get("result") != new_pred.get("result"):
            client.update_prediction(old_pred["id"], new_pred["result"])
            updated += 1
    return updated
