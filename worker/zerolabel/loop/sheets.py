"""Contact sheets of pseudo-classes: sample crops of each cluster on one PNG, to name it.

After ``zerolabel cluster`` a team writes a mapping (``cluster_03 -> "bike"``); a sheet per
cluster shows what its objects look like. Objects and boxes are read as the cluster command
reads them (:func:`zerolabel.labelstudio.regions.read_objects` on each task's chosen
prediction), images through the same loaders, so a sheet shows the crops that were described.
The samples are a seeded choice: the same tasks and seed give the same sheets.

The same sheets explain a fit (:func:`write_patch_sheets`): ``zerolabel rps-fit`` shows the top
representer patches of each direction, each in its surroundings with the patch outlined, so a
team sees what the regions of that direction (or that label) were found by.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageDraw

from zerolabel.contract import Box
from zerolabel.errors import DiscoveryError, RegionError
from zerolabel.io.images import LoadedImage
from zerolabel.labelstudio.regions import read_objects, result_image_hw
from zerolabel.loop.pseudo_classes import chosen_prediction
from zerolabel.progress import track

logger = logging.getLogger(__name__)

SAMPLES = 16
"""Crops per sheet by default (a 4 x 4 grid)."""
TILE = 128
"""Side of the square each crop is fitted into, in pixels."""
GAP = 4
"""Pixels between tiles and around the grid."""
HEADER = 24
"""Height of the band holding the cluster's name and size."""
BACKGROUND = (255, 255, 255)
EMPTY_TILE = (220, 220, 220)
"""Colour of a tile whose crop could not be read (and of unused tiles)."""
OUTLINE = (255, 0, 0)
"""Colour of the outline around a shown patch."""
CONTEXT = 4.0
"""A shown patch's crop spans this many times the patch on each axis (its surroundings)."""


@dataclass(frozen=True)
class Member:
    """One object of a cluster: the task it is in and its box in original pixels."""

    task: int  # index in the task list
    box: Box


@dataclass(frozen=True)
class SheetLayout:
    """Grid geometry shared by every sheet of a run."""

    samples: int = SAMPLES
    tile: int = TILE

    @property
    def columns(self) -> int:
        return max(1, math.ceil(math.sqrt(self.samples)))

    @property
    def rows(self) -> int:
        return max(1, math.ceil(self.samples / self.columns))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of a sheet in pixels."""
        return (
            GAP + self.columns * (self.tile + GAP),
            HEADER + GAP + self.rows * (self.tile + GAP),
        )

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left corner (x, y) of tile ``index`` (row-major)."""
        row, column = divmod(index, self.columns)
        return GAP + column * (self.tile + GAP), HEADER + GAP + row * (self.tile + GAP)


def cluster_members(
    tasks: Sequence[dict[str, Any]], *, model_version: str | None = None
) -> dict[str, list[Member]]:
    """Objects of each label, over every task's chosen prediction, in task order.

    An object (a box and the mask of the same object are one) counts once, under the label of
    its first region; objects without a label are left out, as are unreadable regions.
    """
    members: dict[str, list[Member]] = {}
    for index, task in enumerate(tasks):
        prediction = chosen_prediction(task, model_version)
        items = [i for i in (prediction or {}).get("result") or [] if isinstance(i, dict)]
        if not items:
            continue
        try:
            objects = read_objects(items, result_image_hw(items))
        except RegionError as exc:
            logger.warning("task %s: regions not read: %s", task.get("id"), exc)
            continue
        seen: set[str] = set()
        for region in objects:
            if region.key in seen or region.label is None:
                continue
            seen.add(region.key)
            members.setdefault(region.label, []).append(Member(index, region.box))
    return dict(sorted(members.items()))


def sample(members: Sequence[Member], count: int, seed: int) -> list[Member]:
    """A seeded choice of ``count`` members (all of them when fewer), in their order."""
    if len(members) <= count:
        return list(members)
    picked = np.random.default_rng(seed).choice(len(members), count, replace=False)
    return [members[i] for i in sorted(int(i) for i in picked)]


def crop(image: LoadedImage, box: Box) -> Image.Image | None:
    """The box's pixels (``image.pixels`` may be a reduced decode); None when empty."""
    height, width = image.pixels.shape[:2]
    sy, sx = height / image.original_hw[0], width / image.original_hw[1]
    x0, x1 = (min(max(round(v * sx), 0), width) for v in (box.x0, box.x1))
    y0, y1 = (min(max(round(v * sy), 0), height) for v in (box.y0, box.y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return Image.fromarray(image.pixels[y0:y1, x0:x1])


def render_sheet(
    name: str,
    size: int,
    crops: Sequence[Image.Image | None],
    layout: SheetLayout,
    *,
    caption: str | None = None,
) -> Image.Image:
    """One sheet: ``name`` and ``size`` (or ``name`` and ``caption``) in the header band, the
    crops fitted into the tiles (aspect kept, centred), unreadable crops and unused tiles grey."""
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    shown = f"{name}: {size} object{'s' if size != 1 else ''}"
    if caption is not None:
        shown = f"{name}: {caption}"
    elif len(crops) < size:
        shown += f" ({len(crops)} shown)"
    draw.text((GAP, GAP), shown, fill=(0, 0, 0))
    for index in range(layout.columns * layout.rows):
        x, y = layout.origin(index)
        piece = crops[index] if index < len(crops) else None
        if piece is None:
            draw.rectangle((x, y, x + layout.tile - 1, y + layout.tile - 1), fill=EMPTY_TILE)
            continue
        scale = layout.tile / max(piece.size)  # small crops are enlarged, pixels kept sharp
        target = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
        resample = Image.Resampling.BICUBIC if scale < 1 else Image.Resampling.NEAREST
        fitted = piece.resize(target, resample)
        sheet.paste(
            fitted, (x + (layout.tile - fitted.width) // 2, y + (layout.tile - fitted.height) // 2)
        )
    return sheet


def write_sheets(
    tasks: Sequence[dict[str, Any]],
    load_image: Callable[[dict[str, Any]], LoadedImage],
    out_dir: Path,
    *,
    layout: SheetLayout | None = None,
    seed: int = 0,
    model_version: str | None = None,
) -> dict[str, Path]:
    """Write ``<label>.png`` for every label of the tasks' predictions; returns them by label.

    Each image is loaded once, however many sampled crops it holds; an image that cannot be
    loaded leaves grey tiles and is logged.
    """
    grid = layout or SheetLayout()
    members = cluster_members(tasks, model_version=model_version)
    chosen = {label: sample(found, grid.samples, seed) for label, found in members.items()}
    crops = _crops([m for picked in chosen.values() for m in picked], tasks, load_image)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    stems: set[str] = set()
    for label, picked in chosen.items():
        sheet = render_sheet(label, len(members[label]), [crops.get(m) for m in picked], grid)
        path = out_dir / f"{_file_stem(label, stems)}.png"
        sheet.save(path)
        written[label] = path
    return written


def _crops(
    members: Sequence[Member],
    tasks: Sequence[dict[str, Any]],
    load_image: Callable[[dict[str, Any]], LoadedImage],
) -> dict[Member, Image.Image | None]:
    """The crop of each member, loading each task's image once."""
    by_task: dict[int, list[Member]] = {}
    for member in members:
        by_task.setdefault(member.task, []).append(member)
    crops: dict[Member, Image.Image | None] = {}
    for index, wanted in track(sorted(by_task.items()), "cropping objects", unit="image"):
        try:
            image = load_image(tasks[index])
        except (DiscoveryError, ValueError, OSError) as exc:
            logger.warning("task %s: image not loaded: %s", tasks[index].get("id"), exc)
            continue
        for member in wanted:
            crops[member] = crop(image, member.box)
    return crops


def _file_stem(label: str, taken: set[str]) -> str:
    """A file name for the label's sheet: unsafe characters replaced, clashes numbered."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "label"
    candidate, number = stem, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}-{number}"
    taken.add(candidate.lower())
    return candidate


class ShownPatch(Protocol):
    """A patch of a training image to show: its image's name, how to load it, its box."""

    @property
    def name(self) -> str: ...

    @property
    def box(self) -> Box: ...

    def load(self) -> LoadedImage: ...


def patch_in_context(image: LoadedImage, box: Box, context: float = CONTEXT) -> Image.Image | None:
    """A crop ``context`` times the box on each axis around it (clipped to the image), the box
    outlined; None when the box lies outside the image."""
    height, width = image.pixels.shape[:2]
    sy, sx = height / image.original_hw[0], width / image.original_hw[1]
    cx, cy = (box.x0 + box.x1) / 2 * sx, (box.y0 + box.y1) / 2 * sy
    half_w, half_h = max(box.width * sx, 1.0) * context / 2, max(box.height * sy, 1.0) * context / 2
    x0, x1 = (min(max(round(v), 0), width) for v in (cx - half_w, cx + half_w))
    y0, y1 = (min(max(round(v), 0), height) for v in (cy - half_h, cy + half_h))
    if x1 <= x0 or y1 <= y0:
        return None
    piece = Image.fromarray(image.pixels[y0:y1, x0:x1]).convert("RGB")
    outline = (box.x0 * sx - x0, box.y0 * sy - y0, box.x1 * sx - x0 - 1, box.y1 * sy - y0 - 1)
    ImageDraw.Draw(piece).rectangle(outline, outline=OUTLINE)
    return piece


def write_patch_sheets(
    groups: Mapping[str, Sequence[ShownPatch]],
    out_dir: Path,
    *,
    caption: str,
    layout: SheetLayout | None = None,
) -> dict[str, Path]:
    """Write ``<group>.png`` for every group of patches, each patch in its surroundings
    (:func:`patch_in_context`); returns them by group.

    Each image is loaded once; an image that cannot be loaded leaves grey tiles and is logged.
    """
    grid = layout or SheetLayout(samples=max((len(g) for g in groups.values()), default=1))
    images: dict[str, LoadedImage | None] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    stems: set[str] = set()
    for group, patches in groups.items():
        crops = []
        for patch in patches:
            if patch.name not in images:
                images[patch.name] = _loaded(patch)
            image = images[patch.name]
            crops.append(None if image is None else patch_in_context(image, patch.box))
        sheet = render_sheet(group, len(patches), crops, grid, caption=caption)
        path = out_dir / f"{_file_stem(group, stems)}.png"
        sheet.save(path)
        written[group] = path
    return written


def _loaded(patch: ShownPatch) -> LoadedImage | None:
    try:
        return patch.load()
    except (DiscoveryError, ValueError, OSError) as exc:
        logger.warning("%s: image not loaded: %s", patch.name, exc)
        return None
