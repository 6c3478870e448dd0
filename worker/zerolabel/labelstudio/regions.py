"""Label Studio result items -> regions in original pixels (standard library and numpy).

The one reader of Label Studio's region JSON: export, clustering and project evaluation all
see a region through :func:`read_region` / :func:`read_objects`, so the box clustering crops
is the box export writes.

- A ``rectanglelabels``/``rectangle`` item gives a box. A rotated rectangle counts as the
  axis-aligned bounds of its rotated corners (Label Studio turns it clockwise, in degrees,
  about its top-left corner). Boxes are clipped to the image; an empty one is unreadable.
- A ``brushlabels``/``brush`` item gives its mask as a COCO :class:`~zerolabel.contract.Rle`
  (decoded from the brush runs, never as a pixel array) and the mask's tight box: an object
  zerolabel sent as its mask alone (:mod:`zerolabel.labelstudio.tasks`) has that box.
- The box and the mask zerolabel wrote for one object (ids ``zl-<hash>-<n>-box`` /
  ``-mask``, see :func:`object_id`), or items sharing one id, share an object key.

An object zerolabel sent as a box and a mask (the ``"both"`` form, and predictions made before
objects were sent as one region) is one object however it was edited. Label Studio keeps a
prediction's region ids in the annotation made from it, so the items the annotation started
from (``before``: its task's predictions, by id) tell what the annotator did to each shape. The
annotator's latest shape wins and nothing stale is exported; each rule but the first is counted
under its name:

================================  ============================================================
the annotator                      the object read
================================  ============================================================
edited neither shape               box and mask as predicted, whatever their overlap
edited the box, not the mask       the box alone: the mask is stale, whatever the overlap
                                   (:data:`STALE_MASK`)
edited the mask, not the box       the mask, with its tight box as the box (:data:`STALE_BOX`
                                   when that moves the box)
edited both                        both when they agree, else the box alone (:data:`BOTH_EDITED`)
deleted the box, kept the mask     nothing: the object was deleted (:data:`DELETED`)
deleted the box, edited the mask   the mask, with its tight box (:data:`MASK_KEPT`)
deleted the mask                   the box alone, an object without a mask (:data:`BOX_KEPT`):
                                   the box is the object's handle in this form, and deleting a
                                   mask that is wrong while keeping a right box is a correction
(no record of the prediction)      both when they agree, else the box alone (:data:`UNRECORDED`)
================================  ============================================================

A box is edited when an edge moved more than :data:`EDIT_TOLERANCE_PX`, a mask when any pixel
changed; a box and a mask agree when the box's IoU with the mask's box is at least
:data:`AGREE_IOU`. A label the annotator changed on one shape wins over the other shape's. The
record is there when tasks are read with their predictions (Label Studio's task API, or an
export snapshot holding full predictions); its plain JSON export lists predictions by id only.
An object sent as one region needs no record: it is what the annotator left of it.
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
from zerolabel.errors import NoImageSize, RegionError
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
BOTH_EDITED = "box and mask both edited and disagree: mask dropped"
DELETED = "box deleted: the object's mask left out"
MASK_KEPT = "box deleted, edited mask kept with its own box"
BOX_KEPT = "mask deleted: box kept without a mask"
UNRECORDED = "box and mask disagree, no record of the prediction: mask dropped"
"""Resolutions counted for objects sent as a box and a mask (see the module docstring)."""

_BOX_AND_MASK = frozenset({"box", "mask"})
_OBJECT_PART = re.compile(r"(zl-[0-9a-f]+-\d+)-(?:box|mask)")


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
    (label and score from the rectangle first), resolved by the rules of the module docstring;
    so is a lone box or mask whose object ``before`` holds as a box and a mask (the other
    shape was deleted). In any other group each box, then each mask, is an object of its own.
    A ``labels`` item labels the shapes of its group that carry no label of their own.

    Args:
        items: the result items (any types; non-dict entries are ignored).
        image_hw: (height, width) of the original image (:func:`result_image_hw`).
        dropped: when given, counts the items left out, by reason.
        before: the items the annotation started from (its task's predictions), by item id;
            tells which shape of an object the annotator edited or deleted. For a prediction
            itself, its own items: nothing was edited.
        conflicts: when given, counts the objects resolved by a rule, by its name
            (:data:`STALE_MASK`, :data:`STALE_BOX`, :data:`BOTH_EDITED`, :data:`DELETED`,
            :data:`MASK_KEPT`, :data:`BOX_KEPT`, :data:`UNRECORDED`).

    Returns:
        One region per object.
    """
    drops: Counter[str] = Counter() if dropped is None else dropped
    record = before or {}
    context = _Context(
        image_hw,
        drops,
        record,
        Counter() if conflicts is None else conflicts,
        _predicted_parts(record),
    )
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
    predicted: Mapping[str, frozenset[str]]  # object key -> its shapes in ``before``


Read = tuple[LsRegion, dict[str, Any]]  # a region and the item it was read from


def _predicted_parts(before: Mapping[str, dict[str, Any]]) -> dict[str, frozenset[str]]:
    """Object key -> the shapes (``"box"``, ``"mask"``) its items in ``before`` have."""
    parts: dict[str, set[str]] = {}
    for region_id, item in before.items():
        kind = item.get("type") if isinstance(item, dict) else None
        part = "box" if kind in BOX_TYPES else "mask" if kind in MASK_TYPES else None
        if part is not None:
            parts.setdefault(object_key(str(region_id)), set()).add(part)
    return {key: frozenset(found) for key, found in parts.items()}


def _group_objects(group: list[tuple[int, dict[str, Any]]], ctx: _Context) -> list[LsRegion]:
    """One object from a box and a mask of one key, or from the shape left of a predicted
    box and mask; separate objects otherwise."""
    boxes = _readable([p for p in group if p[1]["type"] in BOX_TYPES], ctx)
    masks = _readable([p for p in group if p[1]["type"] in MASK_TYPES], ctx)
    group_label = next((_label(i) for _, i in group if i["type"] in LABEL_TYPES), None)
    if len(boxes) == 1 and len(masks) == 1:
        return [_pair(boxes[0], masks[0], group_label, ctx)]
    kinds = {item["type"] for _, item in group}
    key = object_key(str(group[0][1].get("id") or f"#{group[0][0]}"))
    if ctx.predicted.get(key) == _BOX_AND_MASK:
        if len(masks) == 1 and not kinds & set(BOX_TYPES):
            return _box_deleted(masks[0], group_label, ctx)
        if len(boxes) == 1 and not kinds & set(MASK_TYPES):
            ctx.conflicts[BOX_KEPT] += 1
            box = boxes[0][0]
            return [LsRegion(box.key, box.box, box.label or group_label, box.score)]
    return [
        LsRegion(r.key, r.box, r.label or group_label, r.score, r.mask) for r, _ in boxes + masks
    ]


def _box_deleted(mask_read: Read, group_label: str | None, ctx: _Context) -> list[LsRegion]:
    """The object whose box the annotator deleted: none, unless they edited its mask."""
    mask, item = mask_read
    if not _edited(item, mask, ctx):
        ctx.conflicts[DELETED] += 1
        return []
    ctx.conflicts[MASK_KEPT] += 1
    return [LsRegion(mask.key, mask.box, mask.label or group_label, mask.score, mask.mask)]


def _pair(box_read: Read, mask_read: Read, group_label: str | None, ctx: _Context) -> LsRegion:
    """The object of one box and one mask, by the rules of the module docstring."""
    (box, box_item), (mask, mask_item) = box_read, mask_read
    label = _pair_label(box_read, mask_read, ctx) or group_label
    score = box.score if box.score is not None else mask.score
    both = LsRegion(box.key, box.box, label, score, mask.mask)
    box_only = LsRegion(box.key, box.box, label, score)
    box_edited = _edited(box_item, box, ctx)
    mask_edited = _edited(mask_item, mask, ctx)
    if box_edited is None or mask_edited is None or (box_edited and mask_edited):
        if box_iou(box.box, mask.box) >= AGREE_IOU:
            return both
        ctx.conflicts[BOTH_EDITED if box_edited and mask_edited else UNRECORDED] += 1
        return box_only
    if box_edited:
        ctx.conflicts[STALE_MASK] += 1
        return box_only
    if not mask_edited:
        return both  # as predicted, whatever the overlap
    if _moved(box.box, mask.box):
        ctx.conflicts[STALE_BOX] += 1
    return LsRegion(box.key, mask.box, label, score, mask.mask)


def _pair_label(box_read: Read, mask_read: Read, ctx: _Context) -> str | None:
    """The label of a box and mask: one the annotator changed first, else the box's, else
    the mask's."""
    reads = (box_read, mask_read)
    for region, item in reads:
        original = ctx.before.get(str(item.get("id")))
        if region.label is not None and original is not None and _label(original) != region.label:
            return region.label
    return next((region.label for region, _ in reads if region.label is not None), None)


def _edited(item: dict[str, Any], region: LsRegion, ctx: _Context) -> bool | None:
    """Whether ``item``'s shape differs from the item of its id in ``before``; None when
    unknown."""
    original = ctx.before.get(str(item.get("id")))
    if original is None:
        return None
    try:
        old = read_region(original, ctx.image_hw)
    except RegionError:
        return None
    if region.mask is not None:
        return old.mask is None or old.mask.counts != region.mask.counts
    return _moved(old.box, region.box)


def _moved(a: Box, b: Box) -> bool:
    """Whether an edge of ``b`` is more than :data:`EDIT_TOLERANCE_PX` from ``a``'s."""
    edges = zip(a.to_list(), b.to_list(), strict=True)
    return any(abs(p - q) > EDIT_TOLERANCE_PX for p, q in edges)


def _readable(items: list[tuple[int, dict[str, Any]]], ctx: _Context) -> list[Read]:
    """The regions of (index, item) pairs with their items; the others counted by reason."""
    regions: list[Read] = []
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
