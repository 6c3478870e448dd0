"""How to build and train the detector: :class:`CadConfig`; :func:`parse_duration` (intervals);
:func:`choose_masks` (Mask R-CNN or the box-only detector, from the labels)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from zerolabel.errors import ConfigError

logger = logging.getLogger(__name__)

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}

MASKS_MIN_FRACTION = 0.5
"""Share of the objects that must have a mask for the detector to be Mask R-CNN by default.

Mask R-CNN trains a mask for every object, and an object without a segmentation gets its filled
box as mask. Below half, most of the mask head's targets would be rectangles: it would learn to
fill boxes rather than follow shapes, and its masks would be worse than none. The box-only
detector (Faster R-CNN) is trained instead; ``masks=True`` (``--masks``) still forces masks."""


@dataclass(frozen=True)
class CadConfig:
    """How to build and train the detector.

    ``CadConfig(masks=True, iterations=2000, device="cuda")``  # Mask R-CNN, CutLER-like run
    """

    masks: bool  # Mask R-CNN (True) or Faster R-CNN (False)
    min_size: int = 512  # model input: shorter side resized to this...
    max_size: int = 1024  # ...unless the longer side would exceed this
    iterations: int = 1000  # total SGD steps (a resumed run continues up to this)
    batch_size: int = 2  # images per step
    lr: float = 0.0025  # torchvision's 0.02 for 16 images, scaled to 2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iterations: int = 100  # linear lr warm-up from lr / warmup_iterations
    flip_prob: float = 0.5  # horizontal-flip augmentation
    checkpoint_every: int | None = None  # iterations between checkpoint writes (None: off)
    checkpoint_seconds: float | None = 300.0  # wall time between checkpoint writes (None: off)
    val_fraction: float | None = None  # held-out images; None: 0.1 from 50 images on, else 0
    init_weights: str | None = None  # a CAD checkpoint to start from (self-training rounds)
    seed: int = 0  # model init, image order, flips and RoI sampling
    device: str = "cpu"
    backbone_checkpoint: str | None = None  # local ResNet-50 state dict (e.g. DINO)
    trainable_backbone_layers: int | None = None  # 0-5; None: 3 with a checkpoint, else 5
    rois_per_image: int = 512  # RoI-head samples per image (torchvision and CutLER: 512)
    proposals: int | None = None  # RPN proposals per image; None: 2000 training, 1000 testing
    drop_loss_iou: float | None = 0.01  # CutLER DropLoss threshold; None: plain loss

    def __post_init__(self) -> None:
        positive = ("min_size", "max_size", "iterations", "batch_size", "checkpoint_every")
        for name in (*positive, "rois_per_image", "proposals"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"CadConfig.{name} must be at least 1, got {getattr(self, name)}")
        layers = self.trainable_backbone_layers
        if layers is not None and not 0 <= layers <= 5:
            raise ConfigError(f"trainable_backbone_layers must be in 0..5, got {layers}")
        if self.drop_loss_iou is not None and not 0.0 <= self.drop_loss_iou < 1.0:
            raise ConfigError(f"drop_loss_iou must be in [0, 1) or None, got {self.drop_loss_iou}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ConfigError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.checkpoint_seconds is not None and not self.checkpoint_seconds > 0:
            raise ConfigError(
                f"checkpoint_seconds must be positive or None, got {self.checkpoint_seconds}"
            )
        if self.val_fraction is not None and not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(
                f"val_fraction must be in [0, 1) (0 disables validation), got {self.val_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CadConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown CadConfig fields {sorted(unknown)}: newer zerolabel?")
        return cls(**data)


def parse_duration(text: str) -> float:
    """Seconds in a positive wall-time interval: ``90s``, ``5m``, ``1.5h`` or plain seconds.

    Raises:
        ValueError: not such an interval.
    """
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)", text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: use e.g. 90s, 5m, 1h or seconds")
    seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ValueError(f"{text!r}: the interval must be positive")
    return seconds


@dataclass(frozen=True)
class MaskCount:
    """How many of the objects a detector trains on have a segmentation."""

    masked: int
    objects: int

    @classmethod
    def of(cls, annotations: Iterable[Any]) -> MaskCount:
        """Count COCO annotations as training does: crowd regions and empty boxes are left out."""
        trained = [ann for ann in annotations if _trained_on(ann)]
        return cls(sum(1 for ann in trained if ann.get("segmentation")), len(trained))

    @property
    def fraction(self) -> float:
        return self.masked / self.objects if self.objects else 0.0


def choose_masks(annotations: Iterable[Any], forced: bool | None = None) -> bool:
    """Whether to train Mask R-CNN on these COCO annotations, warning when masks are few.

    Args:
        annotations: the COCO file's ``annotations``.
        forced: the caller's choice (``--masks`` / ``--no-masks``); None decides from the
            labels: masks when at least :data:`MASKS_MIN_FRACTION` of the objects have one.

    Returns:
        True for Mask R-CNN, False for the box-only detector. A warning names the counts
        whenever Mask R-CNN trains objects without a mask, or masks are left unused by default.
    """
    count = MaskCount.of(annotations)
    if forced is False or (forced is None and count.masked == 0):
        return False
    missing = count.objects - count.masked
    if forced is None and count.fraction < MASKS_MIN_FRACTION:
        logger.warning(
            "only %d of %d objects have a mask (under %d%%): training the box-only detector; "
            "--masks trains Mask R-CNN anyway, with the box of the other %d as their mask",
            count.masked,
            count.objects,
            round(100 * MASKS_MIN_FRACTION),
            missing,
        )
        return False
    if missing:
        logger.warning(
            "%d of %d objects have no mask: Mask R-CNN trains them with their filled box as mask%s",
            missing,
            count.objects,
            "" if forced else " (--no-masks trains the box-only detector)",
        )
    return True


def _trained_on(ann: Any) -> bool:
    """Whether training keeps a COCO annotation: not a crowd region, not an empty box."""
    if not isinstance(ann, Mapping) or ann.get("iscrowd"):
        return False
    try:
        width, height = float(ann["bbox"][2]), float(ann["bbox"][3])
    except (KeyError, IndexError, TypeError, ValueError):
        return True  # malformed: the dataset names it when it is read
    return width > 0 and height > 0
