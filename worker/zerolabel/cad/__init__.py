"""Class-agnostic detector (CAD): train, resume, load and run a one-class Faster/Mask R-CNN.

The detector is torchvision's ResNet-50-FPN Faster R-CNN (Mask R-CNN with ``masks``) with
``num_classes=2`` (background + "object"), trained on a COCO file: our pseudo-label exports or
the labels a team corrected in Label Studio. CutLER's recipe, as far as torchvision allows:
backbone init and DropLoss (:mod:`zerolabel.cad.model`), then self-training
(:mod:`zerolabel.cad.inference`).

- :mod:`zerolabel.cad.config`: :class:`CadConfig`, how to build and train the detector.
- :mod:`zerolabel.cad.data`: :class:`CocoDetectionDataset`, a COCO file as training data.
- :mod:`zerolabel.cad.model`: :func:`build_detector`, :class:`DropLossRoIHeads`,
  :func:`load_backbone_checkpoint`, :func:`read_checkpoint`, :func:`load_detector`.
- :mod:`zerolabel.cad.training`: :func:`train`, with resume and checkpoints.
- :mod:`zerolabel.cad.inference`: :func:`detect` and :func:`self_training_round`.

Checkpoints (``checkpoint_last.pt``) hold the model, the optimizer, the iteration count, the
config and the marker ``format: "zerolabel-cad-1"``; they load with ``weights_only=True``.
"""

from __future__ import annotations

from zerolabel.cad.config import CadConfig
from zerolabel.cad.data import CocoDetectionDataset, TrainingTarget
from zerolabel.cad.inference import MASK_THRESHOLD, Detection, detect, self_training_round
from zerolabel.cad.model import (
    CHECKPOINT_FORMAT,
    DropLossRoIHeads,
    build_detector,
    load_backbone_checkpoint,
    load_detector,
    read_checkpoint,
)
from zerolabel.cad.training import CHECKPOINT_NAME, train

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "MASK_THRESHOLD",
    "CadConfig",
    "CocoDetectionDataset",
    "Detection",
    "DropLossRoIHeads",
    "build_detector",
    "detect",
    "load_backbone_checkpoint",
    "load_detector",
    "read_checkpoint",
    "self_training_round",
    "train",
    "TrainingTarget",
]
