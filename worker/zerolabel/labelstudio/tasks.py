"""Discovery results -> Label Studio prediction JSON (standard library, numpy, zerolabel.geometry).

Label Studio 1.23 takes boxes as ``rectanglelabels`` results in percent of the original image
size, and masks as ``brushlabels`` results holding its brush RLE
(:mod:`zerolabel.labelstudio.brush`). This module writes both; it must stay importable without
torch or ``label_studio_ml``. Reading results back is :mod:`zerolabel.labelstudio.regions`.

Each Label Studio region is one thing to the annotator, who selects, edits and deletes it alone,
so an object is sent as one region where it can be (:attr:`Target.shapes`):

- ``"mask"``: an object with a mask is its brush region alone (its box is the mask's tight box
  wherever a box is needed: export, clustering, evaluation); an object without one is its box.
- ``"box"``: every object is its box; masks are never sent.
- ``"both"``: every object is a box and, when it has a mask, a brush too: two regions whose ids
  link them (``zl-<hash>-<n>-box`` / ``-mask``), which
  :func:`~zerolabel.labelstudio.regions.read_objects` reads back as one object.

:func:`~zerolabel.labelstudio.label_config.find_target` picks the form from the project's
``shapes`` option and labeling config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zerolabel.contract import SHAPE_FORMS, DiscoveryResult, Region, Rle
from zerolabel.labelstudio.brush import rle_to_brush_rle
from zerolabel.labelstudio.regions import object_id

SHAPES = ("auto", *SHAPE_FORMS)
"""Values of the ``shapes`` option: how objects are sent to Label Studio. ``"auto"`` sends each
object as one region, its mask when the labeling config has a ``<BrushLabels>`` for the image
and the mask follows the image's edges, else its box
(:func:`~zerolabel.labelstudio.label_config.resolve_shapes`); the others are the forms
:attr:`Target.shapes` takes (the module docstring says what each writes)."""


@dataclass(frozen=True)
class Target:
    """Where pre-annotations go in a Label Studio project (names from its labeling config).

    Raises:
        ValueError: ``shapes`` is not one of :data:`~zerolabel.contract.SHAPE_FORMS`.
    """

    to_name: str = "image"  # the <Image> tag
    data_key: str = "image"  # task data key holding the image URL ($image)
    box_from_name: str | None = "label"  # <RectangleLabels> control; None when absent
    brush_from_name: str | None = "mask"  # <BrushLabels> control; None when absent
    label: str = "object"  # label value for regions without a label of their own
    brush_label: str | None = None  # label for masks when set (the brush control's own labels)
    shapes: str = "both"  # the regions of an object: "box", "mask" or "both" (module docstring)

    def __post_init__(self) -> None:
        if self.shapes not in SHAPE_FORMS:
            raise ValueError(
                f"Target shapes must be one of {', '.join(SHAPE_FORMS)}, got {self.shapes!r}"
            )

    @property
    def needs_masks(self) -> bool:
        """Whether objects' masks are sent: a brush control, and a form that sends masks."""
        return self.brush_from_name is not None and self.shapes != "box"

    def parts(self, has_mask: bool) -> tuple[str, ...]:
        """The regions one object is sent as: ``("box",)``, ``("mask",)``, both, or none.

        Args:
            has_mask: whether the object has a mask.
        """
        brush = has_mask and self.needs_masks
        if brush and self.shapes == "mask":
            return ("mask",)
        box = ("box",) if self.box_from_name is not None else ()
        return box + (("mask",) if brush else ())


def regions_to_results(result: DiscoveryResult, target: Target) -> list[dict[str, Any]]:
    """Label Studio result items for every region, in the form ``target.shapes`` names.

    Ids are ``zl-<hash of model_version>-<region index>-box|mask``
    (:func:`zerolabel.labelstudio.regions.object_id`): deterministic, unique within a task,
    and different for the box and the mask of one object.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.

    Returns:
        The items of a prediction's ``result`` list.

    Raises:
        ValueError: if a region's mask does not have the image's size.
    """
    items: list[dict[str, Any]] = []
    for index, region in enumerate(result.regions):
        item = _Item(object_id(result.model_version, index), result, region, target)
        for part in target.parts(region.mask is not None):
            if part == "box" and target.box_from_name is not None:
                items.append(item.box(target.box_from_name))
            elif part == "mask" and target.brush_from_name is not None and region.mask:
                items.append(item.brush(target.brush_from_name, region.mask))
    return items


@dataclass(frozen=True)
class _Item:
    """Builds the result items of one region."""

    id_prefix: str
    result: DiscoveryResult
    region: Region
    target: Target

    @property
    def label(self) -> str:
        return self.region.label or self.target.label

    def box(self, from_name: str) -> dict[str, Any]:
        value = _box_percent(self.region, self.result.image_hw)
        value |= {"rotation": 0, "rectanglelabels": [self.label]}
        return self._envelope("box", from_name, "rectanglelabels") | {"value": value}

    def brush(self, from_name: str, mask: Rle) -> dict[str, Any]:
        if mask.size_hw != self.result.image_hw:
            raise ValueError(
                f"{self.id_prefix}: mask is {mask.size_hw} but the image is "
                f"{self.result.image_hw} (height, width)"
            )
        rle = rle_to_brush_rle(mask)
        label = self.region.label or self.target.brush_label or self.target.label
        value = {"format": "rle", "rle": rle, "brushlabels": [label]}
        return self._envelope("mask", from_name, "brushlabels") | {"value": value}

    def _envelope(self, suffix: str, from_name: str, kind: str) -> dict[str, Any]:
        h, w = self.result.image_hw
        return {
            "id": f"{self.id_prefix}-{suffix}",
            "from_name": from_name,
            "to_name": self.target.to_name,
            "type": kind,
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "score": float(self.region.score),
        }


def _box_percent(region: Region, image_hw: tuple[int, int]) -> dict[str, Any]:
    """Box as x, y, width, height in percent of the image (x over the width), clipped to it."""
    h, w = image_hw
    box = region.box
    x0, y0 = min(max(box.x0, 0.0), w), min(max(box.y0, 0.0), h)
    x, y = 100.0 * x0 / w, 100.0 * y0 / h
    width = min(100.0 * (min(box.x1, w) - x0) / w, 100.0 - x)
    height = min(100.0 * (min(box.y1, h) - y0) / h, 100.0 - y)
    return {"x": x, "y": y, "width": max(width, 0.0), "height": max(height, 0.0)}


def prediction(result: DiscoveryResult, target: Target) -> dict[str, Any]:
    """One Label Studio prediction: model version, task score and result items.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.

    Returns:
        ``{"model_version", "score", "result"}``, as ``/predict`` answers and tasks import.
    """
    return {
        "model_version": result.model_version,
        "score": float(result.score),
        "result": regions_to_results(result, target),
    }


def task(result: DiscoveryResult, target: Target, image_url: str) -> dict[str, Any]:
    """An importable Label Studio task carrying its prediction.

    Args:
        result: the discovery output of one image.
        target: the labeling-config names to write to.
        image_url: what Label Studio should load, e.g. ``/data/local-files/?d=set1/a.png``.

    Returns:
        ``{"data": {target.data_key: image_url}, "predictions": [prediction]}``.
    """
    return {"data": {target.data_key: image_url}, "predictions": [prediction(result, target)]}
