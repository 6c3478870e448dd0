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
- :mod:`zerolabel.cad.training`: :func:`train`, with checkpoints, clean stops and exact resume.
- :mod:`zerolabel.cad.stopping`: :class:`TrainingInterrupted`, SIGINT/SIGTERM handling.
- :mod:`zerolabel.cad.saving`: atomic checkpoint writes, :func:`export_weights`.
- :mod:`zerolabel.cad.validation`: held-out images, AP50/AP/AR100 at each checkpoint.
- :mod:`zerolabel.cad.inference`: :func:`detect` and :func:`self_training_round`.

A training folder holds one full checkpoint (``checkpoint_last.pt``: the model, the optimizer,
the iteration count, the config and the marker ``format: "zerolabel-cad-1"``), the
weights-only exports workers serve (``cad-<digest>.pt``: no optimizer) and, with held-out
images, ``validation.json``. All load with ``weights_only=True``.

Importing this package loads nothing heavy: each name below is imported from its submodule on
first use, so a process that never touches the detector never imports torchvision's detection
models or pycocotools (a LOST worker, the backend).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from zerolabel.cad.saving import export_weights
    from zerolabel.cad.stopping import TrainingInterrupted
    from zerolabel.cad.training import CHECKPOINT_NAME, train

_SUBMODULE = {
    "CadConfig": "config",
    "CocoDetectionDataset": "data",
    "TrainingTarget": "data",
    "MASK_THRESHOLD": "inference",
    "Detection": "inference",
    "detect": "inference",
    "self_training_round": "inference",
    "CHECKPOINT_FORMAT": "model",
    "DropLossRoIHeads": "model",
    "build_detector": "model",
    "load_backbone_checkpoint": "model",
    "load_detector": "model",
    "read_checkpoint": "model",
    "export_weights": "saving",
    "TrainingInterrupted": "stopping",
    "CHECKPOINT_NAME": "training",
    "train": "training",
}

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "MASK_THRESHOLD",
    "CadConfig",
    "CocoDetectionDataset",
    "Detection",
    "DropLossRoIHeads",
    "TrainingInterrupted",
    "build_detector",
    "detect",
    "export_weights",
    "load_backbone_checkpoint",
    "load_detector",
    "read_checkpoint",
    "self_training_round",
    "train",
    "TrainingTarget",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule when it is first asked for."""
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{submodule}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
