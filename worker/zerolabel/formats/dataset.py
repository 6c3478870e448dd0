"""The exported dataset: images, their objects in original pixels, and what was left out.

:mod:`zerolabel.formats.export` reads a Label Studio export into it; the writers of
:mod:`zerolabel.formats.writers` turn it into COCO, YOLO and PASCAL VOC.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from zerolabel.contract import Box, Rle


@dataclass
class ObjectRecord:
    """One object: box in original pixels (x1, y1 exclusive), class name, optional mask.

    The mask stays run-length encoded (column-major, the image's size): writers that need
    pixels decode one mask at a time.
    """

    box: Box
    label: str
    mask: Rle | None = None
    score: float | None = None  # the region's "score" when it has one (predictions do)


@dataclass
class ImageRecord:
    """One image: ``file_name`` as derived from its URL (see :func:`file_name_from_url`).

    An image without objects is a negative example, kept in every format. ``size_from`` says
    where its size came from when its own result carried none (None: from its regions);
    ``split`` is ``"train"`` or ``"val"`` once :func:`zerolabel.formats.split.split_images`
    assigned one (None: no split asked for). Sized images are listed in the summary by task
    id, else (tasks of ``zerolabel predict`` have none) by file name.
    """

    file_name: str
    width: int
    height: int
    objects: list[ObjectRecord] = field(default_factory=list)
    task_id: int | None = None
    size_from: str | None = None
    split: str | None = None
    url: str = ""  # the task's image URL


@dataclass(frozen=True)
class SkippedTask:
    """A task left out of the dataset and why."""

    task_id: int | None
    reason: str


@dataclass
class Dataset:
    """The exported images, plus what was left out."""

    images: list[ImageRecord]
    skipped: list[SkippedTask] = field(default_factory=list)
    dropped_regions: Counter[str] = field(default_factory=Counter)  # reason -> count
    box_mask_conflicts: Counter[str] = field(default_factory=Counter)  # resolution -> count

    def summary(self) -> dict[str, Any]:
        """Counts for logs and ``summary.json``: images, negatives, objects, masks, skips,
        drops, box/mask conflicts, the images sized from elsewhere (how -> task ids) and the
        split (when one was made)."""
        objects = [obj for image in self.images for obj in image.objects]
        sized: dict[str, list[int | str]] = {}
        for image in self.images:
            if image.size_from is not None:
                name = image.file_name if image.task_id is None else image.task_id
                sized.setdefault(image.size_from, []).append(name)
        summary: dict[str, Any] = {
            "images": len(self.images),
            "negatives": sum(not image.objects for image in self.images),
            "objects": len(objects),
            "masks": sum(obj.mask is not None for obj in objects),
            "labels": dict(sorted(Counter(obj.label for obj in objects).items())),
            "skipped_tasks": [{"task_id": s.task_id, "reason": s.reason} for s in self.skipped],
            "dropped_regions": dict(self.dropped_regions),
            "box_mask_conflicts": dict(self.box_mask_conflicts),
            "sized_from": sized,
        }
        splits = Counter(image.split for image in self.images if image.split is not None)
        if splits:
            summary["split"] = {name: splits[name] for name in ("train", "val")}
        return summary
