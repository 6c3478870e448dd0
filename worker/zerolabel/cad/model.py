"""The detector's network: build it, load backbone weights, load a trained checkpoint.

CutLER's recipe, as far as torchvision allows:

* **Backbone init.** ``backbone_checkpoint`` loads a ResNet-50 state dict (e.g. DINO's
  ``dino_resnet50_pretrain.pth``) into ``backbone.body``; its BatchNorm statistics are then
  frozen (``FrozenBatchNorm2d``), as detectron2 does. Without one the network trains from
  scratch with ordinary BatchNorm (torchvision's rule for weights=None).
* **DropLoss.** Proposals whose IoU with every pseudo box is ≤ ``drop_loss_iou`` are labelled
  "ignore" before the RoI sampler draws its ``rois_per_image`` samples, so objects the
  pseudo-labels missed are not taught as background. CutLER zeroes their loss after sampling
  instead; ignoring them before lets the sampler fill the batch with informative negatives.
  Images without any pseudo box keep the plain loss (their proposals are all background). The
  RPN and mask losses are unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops import boxes as box_ops

from zerolabel.cad.config import CadConfig
from zerolabel.checkpoints import load_fitting, read_checkpoint_file, unwrap_state_dict
from zerolabel.errors import WeightsError

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "zerolabel-cad-1"
"""Marker stored in every checkpoint; bump when the checkpoint layout changes."""


class DropLossRoIHeads(RoIHeads):  # type: ignore[misc]  # torchvision's class is untyped
    """torchvision RoI heads with CutLER's DropLoss (see the module docstring)."""

    def __init__(self, heads: RoIHeads, drop_iou: float) -> None:
        super().__init__(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
        )
        self.drop_iou = drop_iou

    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's matching, then label -1 (ignored by the sampler) for dropped proposals."""
        matched, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        for boxes, gt, image_labels in zip(proposals, gt_boxes, labels, strict=True):
            if gt.numel() == 0:
                continue  # a labelled-empty image: all its proposals are true background
            best_iou = box_ops.box_iou(gt, boxes).max(dim=0).values
            image_labels[best_iou <= self.drop_iou] = -1
        return matched, labels


def build_detector(config: CadConfig) -> nn.Module:
    """The detector of ``config``, seeded, with its starting weights loaded.

    With ``init_weights`` (a CAD checkpoint: the previous self-training round), every weight
    comes from that file and the backbone checkpoint is not read; otherwise the backbone
    checkpoint, if one is set, is loaded into the backbone.

    Raises:
        WeightsError: the backbone checkpoint is unreadable or does not fit a ResNet-50, or the
            ``init_weights`` detector has another architecture (masks, backbone kind).
    """
    model = _build_architecture(config)
    if config.init_weights is not None:
        _load_detector_weights(model, config.init_weights)
    elif config.backbone_checkpoint is not None:
        load_backbone_checkpoint(model, config.backbone_checkpoint)
    return model


def _load_detector_weights(model: nn.Module, path: str | Path) -> None:
    state = read_checkpoint(path)["model"]
    load_fitting(model, state, f"detector {path} does not fit this detector (masks, backbone)")
    logger.info("starting from the weights of %s", path)


def _build_architecture(config: CadConfig) -> nn.Module:
    """ResNet-50-FPN Faster/Mask R-CNN, 2 classes, random weights from ``config.seed``.

    The same network as torchvision's ``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn``
    with weights=None, built from their parts so that the BatchNorm kind and the trainable
    layers follow the backbone checkpoint (the factories tie both to torchvision's own weights).
    """
    pretrained = config.backbone_checkpoint is not None
    layers = config.trainable_backbone_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        backbone = resnet_fpn_backbone(
            backbone_name="resnet50",
            weights=None,
            norm_layer=FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
            trainable_layers=layers if layers is not None else (3 if pretrained else 5),
        )
        detector = MaskRCNN if config.masks else FasterRCNN
        model: nn.Module = detector(
            backbone,
            num_classes=2,
            min_size=config.min_size,
            max_size=config.max_size,
            box_batch_size_per_image=config.rois_per_image,
            **_proposal_counts(config.proposals),
        )
    if config.drop_loss_iou is not None:
        model.roi_heads = DropLossRoIHeads(model.roi_heads, config.drop_loss_iou)
    return model


def _proposal_counts(proposals: int | None) -> dict[str, int]:
    """torchvision's RPN top-n arguments (per FPN level before NMS, per image after)."""
    if proposals is None:
        return {}
    names = ("pre_nms_top_n_train", "post_nms_top_n_train", "pre_nms_top_n_test")
    return {f"rpn_{name}": proposals for name in (*names, "post_nms_top_n_test")}


def load_backbone_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a ResNet-50 state dict into ``model.backbone.body``; ``fc.*`` keys are ignored.

    Accepts plain state dicts (torchvision, DINO's ``dino_resnet50_pretrain.pth``) and the
    wrappers :func:`zerolabel.checkpoints.unwrap_state_dict` knows (``teacher``, ``module.`` ...).

    Raises:
        WeightsError: unreadable file, missing or unexpected keys (named), or wrong shapes.
    """
    path = Path(path)
    loaded = read_checkpoint_file(path, what="backbone checkpoint")
    state = {k: v for k, v in unwrap_state_dict(loaded).items() if not k.startswith("fc.")}
    body = model.get_submodule("backbone.body")
    load_fitting(body, state, f"backbone checkpoint {path} does not fit ResNet-50")
    logger.info("loaded backbone weights from %s (%d tensors)", path, len(state))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A zerolabel CAD checkpoint as a dict (tensors on the CPU).

    Raises:
        WeightsError: missing or unreadable file, or one that is not a zerolabel CAD checkpoint.
    """
    path = Path(path)
    loaded = read_checkpoint_file(path, what="CAD checkpoint")
    marker = loaded.get("format")
    if marker != CHECKPOINT_FORMAT:
        found = f"format {marker!r}" if marker is not None else "no 'format' marker"
        raise WeightsError(
            f"{path} is not a zerolabel CAD checkpoint ({found}, expected {CHECKPOINT_FORMAT!r}): "
            "give the checkpoint_last.pt written by zerolabel.cad.train"
        )
    return dict(loaded)


def load_detector(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, CadConfig]:
    """The trained detector of a checkpoint, in eval mode on ``device``, and its config.

    The backbone checkpoint named in the config is not read again (the weights are in the file);
    the returned config carries ``device``.

    Raises:
        WeightsError: the file is not a zerolabel CAD checkpoint.
    """
    checkpoint = read_checkpoint(path)
    config = replace(CadConfig.from_dict(checkpoint["config"]), device=str(device))
    model = _build_architecture(config)
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), config
