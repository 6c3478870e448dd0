"""Label Studio result items -> regions in original pixels (standard library and numpy).

The one reader of Label Studio's region JSON: export, clustering and project evaluation all
see a region through :func:`read_region` / :func:`read_objects`, so the box clustering crops
is the box export writes.

- A ``rectanglelabels``/``rectangle`` item gives a box. A rotated rectangle counts as the
  axis-aligned bounds of its rotated corners (Label Studio turns it clockwise, in degrees,
  about its top-left corner). Boxes are clipped to the image; an empty one is unreadable.
- A ``brushlabels``/``brush`` item gives its mask as a COCO :class:`~zerolabel.contract.Rle`
  (decoded from the brush runs, never as a pixel array) and the mask's tight box.
- The box and the mask zerolabel wrote for one object (ids ``zl-<hash>-<n>-box`` /
  ``-mask``, see :func:`object_id`), or items sharing one id, share an object key.
- Such a box and mask make one object when they agree (IoU of the box with the mask's box at
  least :data:`AGREE_IOU`). When they do not, the annotator's edit wins: given the items the
  annotation started from (``before``), the edited one is kept and the stale one dropped (a
  stale box gives way to the edited mask's box); without that record the box is kept and the
  mask dropped. Each such object is counted by how it was resolved.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zerolabel.contract import Box, Rle
from zerolabel.errors import DiscoveryError
from zerolabel.geometry import box_iou, rle_box
from zerolabel.labelstudio.brush import brush_rle_to_rle

BOX_TYPES = ("rectanglelabels", "rectangle")
"""Result types read as boxes."""

MASK_TYPES = ("brushlabels", "brush")
"""Result types read as masks."""

LABEL_TYPES = ("labels",)
"""Result types that only label the object of their id (``<Labels>`` next to a shape tag)."""

AGREE_IOU = 0.5
"""A box and a mask of one object agree when the box's IoU with the mask's box is at least this."""

EDIT_TOLERANCE_PX = 0.5
"""A rectangle moved by more than this (any edge, pixels) from the one it started as was edited."""

STALE_MASK = "box edited, stale mask dropped"
STALE_BOX = "mask edited, stale box replaced by the mask's box"
UNRECORDED = "box and mask disagree, neither alone edited: mask dropped"
"""Reasons counted for box/mask pairs that disagree (see :func:`read_objects`)."""

_OBJECT_PART = re.compile(r"(zl-[0-9a-f]+-\d+)-(?:box|mask)")


class RegionError(DiscoveryError, ValueError):
    """A result item or result list that cannot be read; the message is the reason."""


class NoImageSize(RegionError):
    """No item of a result list carries the image size (e.g. an empty result: a negative)."""


@dataclass(frozen=True)
class LsRegion:
    """One object of a Label Studio result, in original-image pixels.

    ``box`` is x0, y0, x1, y1 (x1, y1 exclusive) clipped to the image; ``mask`` the object's
    [H, W] mask as an Rle when it has a brush region; ``label`` the first label of its item
    (None when it carries none); ``score`` the item's ``score`` when it has one (predictions
    do); ``key`` the object key (:func:`object_key`).
    """

    key: str
    box: Box
    label: str | None = None
    score: float | None = None
    mask: Rle | None = None


def object_id(model_version: str, index: int) -> str:
    """The id prefix of the ``index``-th object of a zerolabel prediction: ``zl-<hash>-<n>``.

    Its box and mask items append ``-box`` and ``-mask``; :func:`object_key` strips them.
    """
    digest = hashlib.sha1(model_version.encode()).hexdigest()[:6]
    return f"zl-{digest}-{index}"


def object_key(region_id: str) -> str:
    """The object a region id belongs to: ``zl-<hash>-<n>`` for our ``-box``/``-mask`` ids,
    else the id itself."""
    match = _OBJECT_PART.fullmatch(region_id)
    return match.group(1) if match else region_id


def result_image_hw(items: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(height, width) of the image, from the items' ``original_height``/``original_width``.

    Raises:
        RegionError: no item carries a size, the items disagree, the size is not positive, or
            ``image_rotation`` is set (the image was turned in the editor: unsupported).
    """
    if any(item.get("image_rotation") for item in items):
        raise RegionError(
            "image_rotation is set: the image was rotated in the editor (unsupported)"
        )
    sizes = {
        (item["original_height"], item["original_width"])
        for item in items
        if isinstance(item.get("original_height"), int | float)
        and isinstance(item.get("original_width"), int | float)
    }
    if not sizes:
        raise NoImageSize("no region carries original_width/original_height (no size info)")
    if len(sizes) > 1:
        raise RegionError(f"regions disagree on the image size (height, width): {sorted(sizes)}")
    height, width = sizes.pop()
    if height < 1 or width < 1:
        raise RegionError(f"invalid image size {width}x{height}")
    return int(height), int(width)


def read_region(item: dict[str, Any], image_hw: tuple[int, int], index: int = 0) -> LsRegion:
    """One rectangle or brush item as a region.

    Args:
        item: a result item of type :data:`BOX_TYPES` or :data:`MASK_TYPES`.
        image_hw: (height, width) of the original image.
        index: the item's place in its result list; keys items without an id (``#<index>``).

    Returns:
        The region; a brush's box is its mask's tight box.

    Raises:
        RegionError: another type, a rectangle without numbers or empty inside the image, a
            brush that is not an RLE list, does not decode to ``image_hw`` or is empty. The
            message is short and the same for every item with one cause (it counts drops).
    """
    kind = item.get("type")
    key = object_key(str(item.get("id") or f"#{index}"))
    if kind in BOX_TYPES:
        box = _rectangle(item.get("value") or {}, image_hw)
        return LsRegion(key, box, _label(item), _score(item))
    if kind in MASK_TYPES:
        mask = _brush(item.get("value") or {}, image_hw)
        tight = rle_box(mask)
        if tight is None:
            raise RegionError("empty mask")
        return LsRegion(key, tight, _label(item), _score(item), mask)
    raise RegionError(f"unsupported result type {kind!r}")


def read_objects(
    items: Sequence[dict[str, Any]],
    image_hw: tuple[int, int],
    dropped: Counter[str] | None = None,
    *,
    before: Mapping[str, dict[str, Any]] | None = None,
    conflicts: Counter[str] | None = None,
) -> list[LsRegion]:
    """The objects of one result list, in the order their keys first appear.

    Items are grouped by object key. A group of exactly one box and one mask is one object
    (label and score from the rectangle first): with both shapes when they agree, else the
    shape the annotator edited (see the module docstring). In any other group each box, then
    each mask, is an object of its own. A ``labels`` item labels the shapes of its group that
    carry no label of their own.

    Args:
        items: the result items (any types; non-dict entries are ignored).
        image_hw: (height, width) of the original image (:func:`result_image_hw`).
        dropped: when given, counts the items left out, by reason.
        before: the items the annotation started from (its task's predictions), by item id;
            tells which of a disagreeing box and mask the annotator edited.
        conflicts: when given, counts the box/mask pairs that disagreed, by resolution
            (:data:`STALE_MASK`, :data:`STALE_BOX`, :data:`UNRECORDED`).

    Returns:
        One region per object.
    """
    drops: Counter[str] = Counter() if dropped is None else dropped
    context = _Context(image_hw, drops, before or {}, Counter() if conflicts is None else conflicts)
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind not in BOX_TYPES + MASK_TYPES + LABEL_TYPES:
            drops[f"unsupported result type {kind!r}"] += 1
            continue
        key = object_key(str(item.get("id") or f"#{index}"))
        groups.setdefault(key, []).append((index, item))
    objects: list[LsRegion] = []
    for group in groups.values():
        objects.extend(_group_objects(group, context))
    return objects


@dataclass(frozen=True)
class _Context:
    image_hw: tuple[int, int]
    dropped: Counter[str]
    before: Mapping[str, dict[str, Any]]
    conflicts: Counter[str]


def _group_objects(group: list[tuple[int, dict[str, Any]]], ctx: _Context) -> list[LsRegion]:
    """One object from a box and a mask of one key; separate objects otherwise."""
    boxes = _readable([p for p in group if p[1]["type"] in BOX_TYPES], ctx)
    masks = _readable([p for p in group if p[1]["type"] in MASK_TYPES], ctx)
    group_label = next((_label(i) for _, i in group if i["type"] in LABEL_TYPES), None)
    if len(boxes) == 1 and len(masks) == 1:
        return [_pair(boxes[0], masks[0], group_label, ctx)]
    return [
        LsRegion(r.key, r.box, r.label or group_label, r.score, r.mask) for r, _ in boxes + masks
    ]


def _pair(
    box_read: tuple[LsRegion, dict[str, Any]],
    mask_read: tuple[LsRegion, dict[str, Any]],
    group_label: str | None,
    ctx: _Context,
) -> LsRegion:
    """The object of one box and one mask: both when they agree, else the edited one."""
    (box, box_item), (mask, mask_item) = box_read, mask_read
    label = box.label or mask.label or group_label
    score = box.score if box.score is not None else mask.score
    if box_iou(box.box, mask.box) >= AGREE_IOU:
        return LsRegion(box.key, box.box, label, score, mask.mask)
    box_edited = _edited(box_item, box, ctx)
    mask_edited = _edited(mask_item, mask, ctx)
    if mask_edited and box_edited is False:
        ctx.conflicts[STALE_BOX] += 1
        return LsRegion(box.key, mask.box, label, score, mask.mask)
    ctx.conflicts[STALE_MASK if box_edited and mask_edited is False else UNRECORDED] += 1
    return LsRegion(box.key, box.box, label, score)


def _edited(item: dict[str, Any], region: LsRegion, ctx: _Context) -> bool | None:
    """Whether ``item`` differs from the item of its id in ``before``; None when unknown."""
    original = ctx.before.get(str(item.get("id")))
    if original is None:
        return None
    try:
        old = read_region(original, ctx.image_hw)
    except RegionError:
        return None
    if region.mask is not None:
        return old.mask is None or old.mask.counts != region.mask.counts
    edges = zip(old.box.to_list(), region.box.to_list(), strict=True)
    return any(abs(a - b) > EDIT_TOLERANCE_PX for a, b in edges)


def _readable(
    items: list[tuple[int, dict[str, Any]]], ctx: _Context
) -> list[tuple[LsRegion, dict[str, Any]]]:
    """The regions of (index, item) pairs with their items; the others counted by reason."""
    regions: list[tuple[LsRegion, dict[str, Any]]] = []
    for index, item in items:
        try:
            regions.append((read_region(item, ctx.image_hw, index), item))
        except RegionError as exc:
            ctx.dropped[str(exc)] += 1
    return regions


def _rectangle(value: dict[str, Any], image_hw: tuple[int, int]) -> Box:
    """Axis-aligned bounds of the (rotated) rectangle in pixels, clipped to the image."""
    height, width = image_hw
    try:
        x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
        w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
        angle = math.radians(float(value.get("rotation") or 0.0))
    except (KeyError, TypeError, ValueError):
        raise RegionError("rectangle without numeric x/y/width/height") from None
    cos, sin = math.cos(angle), math.sin(angle)
    corners = ((0.0, 0.0), (w, 0.0), (w, h), (0.0, h))
    xs = [x + dx * cos - dy * sin for dx, dy in corners]
    ys = [y + dx * sin + dy * cos for dx, dy in corners]
    x0, x1 = (min(max(v, 0.0), float(width)) for v in (min(xs), max(xs)))
    y0, y1 = (min(max(v, 0.0), float(height)) for v in (min(ys), max(ys)))
    if x1 <= x0 or y1 <= y0:
        raise RegionError("empty rectangle (after clipping to the image)")
    return Box(x0, y0, x1, y1)


def _brush(value: dict[str, Any], image_hw: tuple[int, int]) -> Rle:
    """The brush's mask as an Rle of the image's size."""
    rle = value.get("rle")
    if value.get("format", "rle") != "rle" or not isinstance(rle, list):
        raise RegionError(f"brush format {value.get('format')!r} without an rle list")
    try:
        return brush_rle_to_rle(rle, image_hw)
    except ValueError:
        raise RegionError("brush RLE does not decode to the image size") from None


def _label(item: dict[str, Any]) -> str | None:
    """First entry of the item's label list (``value[type]``), or None."""
    labels = (item.get("value") or {}).get(item.get("type"))
    if isinstance(labels, list) and labels and isinstance(labels[0], str):
        return labels[0]
    return None


def _score(item: dict[str, Any]) -> float | None:
    score = item.get("score")
    return float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None
