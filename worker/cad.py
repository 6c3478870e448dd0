"""Class-agnostic detector (CAD): train, resume, load and run a one-class Faster/Mask R-CNN.

The detector is torchvision's ResNet-50-FPN Faster R-CNN (Mask R-CNN with ``masks``) with
``num_classes=2`` (background + "object"), trained on a COCO file: our pseudo-label exports or
the labels a team corrected in Label Studio. CutLER's recipe, as far as torchvision allows:

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
* **Self-training.** :func:`self_training_round` turns one round's detections into the next
  round's pseudo-labels (scores ≥ 0.7, then 0.65), keeping earlier labels the detector missed.

Checkpoints (``checkpoint_last.pt``) hold the model, the optimizer, the iteration count, the
config and the marker ``format: "zerolabel-cad-1"``; they load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops import boxes as box_ops
from tqdm import tqdm

from worker.backbone import unwrap_state_dict
from worker.coco import CATEGORY_ID
from worker.contract import Box
from worker.errors import ConfigError, WeightsError
from worker.geometry import box_iou, rle_area, rle_encode, rle_to_coco_string
from worker.images import ImageLimits, LoadedImage, load_file

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "zerolabel-cad-1"
"""Marker stored in every checkpoint; bump when the checkpoint layout changes."""
CHECKPOINT_NAME = "checkpoint_last.pt"
MASK_THRESHOLD = 0.5  # mask probability above which a pixel belongs to the object
_RESUMABLE_FIELDS = ("iterations", "checkpoint_every", "device")  # may change on resume

Detection = tuple[Box, float, npt.NDArray[np.bool_] | None]
"""A box in original-image pixels, its score in [0, 1] and its [H, W] mask (None without)."""


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
    checkpoint_every: int = 500  # iterations between checkpoint_last.pt writes
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CadConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown CadConfig fields {sorted(unknown)}: newer zerolabel?")
        return cls(**data)


Target = dict[str, Tensor]


class CocoDetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Images and targets of a COCO file, in torchvision's detection format.

    ``dataset[i]`` is ``(image, target)``: image [3, h, w] float in [0, 1]; target ``boxes``
    [n, 4] float xyxy, ``labels`` [n] int64 (all 1) and, with ``masks``, ``masks`` [n, h, w]
    uint8. Images are loaded with EXIF orientation and shrunk so that the longer side is at most
    ``max_side`` (never enlarged); targets follow. Every listed image is kept, also without
    annotations (``boxes`` [0, 4]); ``iscrowd`` annotations and empty boxes are skipped.
    Segmentations may be compressed or uncompressed RLE or polygons; an annotation without one
    gets its filled box as mask.
    """

    def __init__(
        self,
        coco_json: str | Path,
        images_dir: str | Path,
        max_side: int,
        *,
        masks: bool = False,
        limits: ImageLimits | None = None,
    ) -> None:
        coco = json.loads(Path(coco_json).read_text(encoding="utf-8"))
        self.images: list[dict[str, Any]] = list(coco["images"])
        self.images_dir = Path(images_dir)
        self.max_side = max_side
        self.masks = masks
        self.limits = limits or ImageLimits()
        self._annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in coco.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if not ann.get("iscrowd", 0) and w > 0 and h > 0:
                self._annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        info = self.images[index]
        loaded = load_file(self.images_dir / info["file_name"], self.limits, max_side=self.max_side)
        coco_hw = (info.get("height"), info.get("width"))
        if None not in coco_hw and coco_hw != loaded.original_hw:
            raise ValueError(
                f"{loaded.source}: the COCO file says {coco_hw[1]}x{coco_hw[0]} but the image is "
                f"{loaded.original_hw[1]}x{loaded.original_hw[0]} (after EXIF orientation)"
            )
        out_hw = _fit(loaded.original_hw, self.max_side)
        resized = Image.fromarray(loaded.pixels).resize(out_hw[::-1], Image.Resampling.BILINEAR)
        image = torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div(255.0)
        return image, self._target(self._annotations[info["id"]], loaded.original_hw, out_hw)

    def _target(
        self, anns: list[dict[str, Any]], original_hw: tuple[int, int], out_hw: tuple[int, int]
    ) -> Target:
        (height, width), (out_h, out_w) = original_hw, out_hw
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        boxes = torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)
        boxes *= torch.tensor([out_w / width, out_h / height, out_w / width, out_h / height])
        limit = torch.tensor([out_w, out_h, out_w, out_h], dtype=torch.float32)
        boxes = boxes.clamp(min=torch.zeros(4), max=limit)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # not outside the image
        target = {"boxes": boxes[keep], "labels": torch.ones(int(keep.sum()), dtype=torch.int64)}
        if self.masks:
            masks = [_resize_mask(_decode_segmentation(a, original_hw), out_hw) for a in anns]
            stacked = np.stack(masks) if masks else np.zeros((0, out_h, out_w), np.uint8)
            target["masks"] = torch.from_numpy(stacked)[keep]
        return target


def _fit(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Size with the longer side at most ``max_side``, aspect kept, never enlarged."""
    scale = min(1.0, max_side / max(hw))
    return (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))


def _decode_segmentation(ann: dict[str, Any], hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """[H, W] uint8 mask of an annotation: RLE, polygons, or its box when it has neither."""
    segmentation = ann.get("segmentation")
    if not segmentation:
        mask = np.zeros(hw, np.uint8)
        x, y, w, h = ann["bbox"]
        mask[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        return mask
    rle = _coco_rle(segmentation, hw)
    if list(rle["size"]) != list(hw):
        raise ValueError(f"annotation {ann.get('id')}: mask is {rle['size']}, image is {hw}")
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def _resize_mask(mask: npt.NDArray[np.uint8], out_hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    if mask.shape == out_hw:
        return mask
    resized = Image.fromarray(mask).resize(out_hw[::-1], Image.Resampling.NEAREST)
    return np.array(resized, dtype=np.uint8)


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
    """The detector of ``config``, seeded, with the backbone checkpoint loaded if one is set.

    Raises:
        WeightsError: the backbone checkpoint is unreadable or does not fit a ResNet-50.
    """
    model = _build_architecture(config)
    if config.backbone_checkpoint is not None:
        load_backbone_checkpoint(model, config.backbone_checkpoint)
    return model


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
    wrappers :func:`worker.backbone.unwrap_state_dict` knows (``teacher``, ``module.`` ...).

    Raises:
        WeightsError: unreadable file, missing or unexpected keys (named), or wrong shapes.
    """
    path = Path(path)
    loaded = _torch_load(path, what="backbone checkpoint")
    state = {k: v for k, v in unwrap_state_dict(loaded).items() if not k.startswith("fc.")}
    try:
        result = model.get_submodule("backbone.body").load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"backbone checkpoint {path} does not fit ResNet-50: {exc}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"backbone checkpoint {path} does not fit ResNet-50: missing keys "
            f"{_few(result.missing_keys)}; unexpected keys {_few(result.unexpected_keys)}"
        )
    logger.info("loaded backbone weights from %s (%d tensors)", path, len(state))


def train(
    config: CadConfig,
    coco_json: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Train the detector with SGD and return the path of ``out_dir/checkpoint_last.pt``.

    The checkpoint is written every ``checkpoint_every`` iterations and at the end. With
    ``resume`` and a checkpoint in ``out_dir``, training continues from its iteration up to
    ``config.iterations``; only ``iterations``, ``checkpoint_every`` and ``device`` may differ
    from the run that wrote it; ``resume=False`` starts over (the old checkpoint is replaced at
    the first save). Each step reseeds from ``seed + iteration``, so on CPU a resumed
    run repeats the uninterrupted one; the caller's random state is left as it was.

    Raises:
        ConfigError: the checkpoint in ``out_dir`` was trained with another config.
        WeightsError: the backbone checkpoint or ``checkpoint_last.pt`` cannot be used.
        ImageLoadError: an image of the COCO file cannot be read.
        FloatingPointError: the loss diverged (lower ``lr``).
        ValueError: the COCO file lists no images.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    dataset = CocoDetectionDataset(coco_json, images_dir, config.max_size, masks=config.masks)
    if len(dataset) == 0:
        raise ValueError(f"{coco_json} lists no images to train on")
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=_cuda_indices(device)):
        model, optimizer, start = _start(config, path if resume else None, device)
        if start >= config.iterations:
            logger.info("%s is already at iteration %d: nothing to train", path, start)
            return path
        _train_loop(model, optimizer, dataset, config, start, path, progress)
    return path


def _start(
    config: CadConfig, checkpoint_path: Path | None, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """A fresh model and optimizer, or both restored from ``checkpoint_path`` when it exists."""
    checkpoint = None
    if checkpoint_path is not None and checkpoint_path.is_file():
        checkpoint = read_checkpoint(checkpoint_path)
        _check_resumable(CadConfig.from_dict(checkpoint["config"]), config, checkpoint_path)
    model = build_detector(config) if checkpoint is None else _build_architecture(config)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    if checkpoint is None:
        return model, optimizer, 0
    optimizer.load_state_dict(checkpoint["optimizer"])
    logger.info("resuming %s at iteration %d", checkpoint_path, checkpoint["iteration"])
    return model, optimizer, int(checkpoint["iteration"])


def _check_resumable(saved: CadConfig, config: CadConfig, path: Path) -> None:
    changed = [
        f"{f.name} ({getattr(saved, f.name)!r} -> {getattr(config, f.name)!r})"
        for f in fields(CadConfig)
        if f.name not in _RESUMABLE_FIELDS and getattr(saved, f.name) != getattr(config, f.name)
    ]
    if changed:
        raise ConfigError(
            f"{path} was trained with another config: {', '.join(changed)}. Use a new out_dir, "
            "resume=False to start over, or the checkpoint's settings."
        )


def _train_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: CocoDetectionDataset,
    config: CadConfig,
    start: int,
    path: Path,
    progress: bool,
) -> None:
    device = torch.device(config.device)
    model.train()
    bar = tqdm(total=config.iterations, initial=start, disable=not progress, desc="CAD", unit="it")
    with bar:
        for iteration in range(start, config.iterations):
            torch.manual_seed(config.seed + iteration)  # flips, RPN and RoI sampling
            images, targets = _batch(dataset, config, iteration, device)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, iteration)
            losses = model(images, targets)
            loss = torch.stack(list(losses.values())).sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at iteration {iteration}: lower CadConfig.lr"
                )
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            done = iteration + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if done % config.checkpoint_every == 0 or done == config.iterations:
                _save_checkpoint(path, model, optimizer, done, config)


def _batch(
    dataset: CocoDetectionDataset, config: CadConfig, iteration: int, device: torch.device
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """The images of one step: a fresh permutation of the dataset per epoch, from the seed."""
    images, targets = [], []
    n = len(dataset)
    for slot in range(iteration * config.batch_size, (iteration + 1) * config.batch_size):
        epoch_order = torch.Generator().manual_seed(config.seed * 100_003 + slot // n)
        image, target = dataset[int(torch.randperm(n, generator=epoch_order)[slot % n])]
        if float(torch.rand(())) < config.flip_prob:
            image, target = _hflip(image, target)
        images.append(image.to(device))
        targets.append({key: value.to(device) for key, value in target.items()})
    return images, targets


def _hflip(image: Tensor, target: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    width = image.shape[-1]
    flipped = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    flipped["boxes"] = boxes
    if "masks" in target:
        flipped["masks"] = target["masks"].flip(-1)
    return image.flip(-1), flipped


def _learning_rate(config: CadConfig, iteration: int) -> float:
    if iteration >= config.warmup_iterations:
        return config.lr
    return config.lr * (iteration + 1) / config.warmup_iterations


def _save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: CadConfig,
) -> None:
    """Write atomically, so an interrupted save never leaves a truncated checkpoint behind."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "iteration": iteration,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)
    logger.debug("saved %s at iteration %d", path, iteration)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A zerolabel CAD checkpoint as a dict (tensors on the CPU).

    Raises:
        WeightsError: missing or unreadable file, or one that is not a zerolabel CAD checkpoint.
    """
    path = Path(path)
    loaded = _torch_load(path, what="CAD checkpoint")
    marker = loaded.get("format")
    if marker != CHECKPOINT_FORMAT:
        found = f"format {marker!r}" if marker is not None else "no 'format' marker"
        raise WeightsError(
            f"{path} is not a zerolabel CAD checkpoint ({found}, expected {CHECKPOINT_FORMAT!r}): "
            "give the checkpoint_last.pt written by worker.cad.train"
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


@torch.inference_mode()
def detect(
    model: nn.Module,
    image: LoadedImage,
    *,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> list[Detection]:
    """Run the detector on one image (puts the model in eval mode).

    Args:
        model: a detector from :func:`load_detector` or :func:`build_detector`.
        image: RGB pixels; they may be smaller than ``original_hw`` (reduced JPEG decode).
        score_threshold: keep detections scoring above this.
        max_detections: keep at most this many, best first.

    Returns:
        (box, score, mask) per detection, best first: boxes in original-image pixels clipped to
        the image, masks [H, W] bool at the original size (None for a Faster R-CNN).
    """
    heads: Any = model.roi_heads  # RoIHeads: its thresholds are plain attributes
    device = next(model.parameters()).device
    pixels = torch.tensor(image.pixels, device=device)  # a copy: decoded pixels are read-only
    tensor = pixels.permute(2, 0, 1).float().div(255.0)
    saved = heads.score_thresh, heads.detections_per_img
    heads.score_thresh, heads.detections_per_img = score_threshold, max_detections
    try:
        output = model.eval()([tensor])[0]
    finally:
        heads.score_thresh, heads.detections_per_img = saved
    return _to_original(output, tuple(image.pixels.shape[:2]), image.original_hw)


def _to_original(
    output: dict[str, Tensor], pixels_hw: tuple[int, ...], original_hw: tuple[int, int]
) -> list[Detection]:
    """Scale boxes from input pixels to the original image; resize and threshold masks."""
    (h, w), (height, width) = pixels_hw, original_hw
    scale = torch.tensor([width / w, height / h, width / w, height / h])
    limit = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes = (output["boxes"].float().cpu() * scale).clamp(min=torch.zeros(4), max=limit)
    detections: list[Detection] = []
    for i, (xyxy, score) in enumerate(zip(boxes.tolist(), output["scores"].tolist(), strict=True)):
        mask = None
        if "masks" in output:
            probability = output["masks"][i : i + 1].float()  # [1, 1, h, w]
            if (h, w) != (height, width):
                probability = nn.functional.interpolate(
                    probability, size=(height, width), mode="bilinear", align_corners=False
                )
            mask = (probability[0, 0] > MASK_THRESHOLD).cpu().numpy()
        detections.append((Box.from_list(xyxy), float(score), mask))
    return detections


def _torch_load(path: Path, what: str) -> Mapping[str, Any]:
    if not path.is_file():
        raise WeightsError(f"{what} {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: say which and why
        raise WeightsError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{what} {path} holds a {type(loaded).__name__}, not a dict")
    return loaded


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _few(keys: Sequence[str], limit: int = 8) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def self_training_round(
    previous: Mapping[str, Any],
    detections: Mapping[int, Sequence[Detection]],
    *,
    score_threshold: float = 0.7,
    merge_iou: float = 0.5,
) -> dict[str, Any]:
    """The next round's pseudo-labels: confident detections plus earlier labels they miss.

    CutLER's self-training step: the detector trained on ``previous`` runs on the same images;
    its detections scoring at least ``score_threshold`` become labels, and every previous label
    whose IoU with all of them stays below ``merge_iou`` is carried over, so objects the detector
    has not learnt yet are not forgotten. Run it with 0.7, then 0.65, as CutLER does.

    Args:
        previous: COCO dict of the labels the detector was trained on (with image sizes).
        detections: per COCO image id, the output of :func:`detect` on that image; images
            missing here keep all their previous labels.
        score_threshold: lowest score of a detection kept as a label.
        merge_iou: overlap (mask IoU when both have masks, else box IoU) from which a previous
            label counts as found again and is dropped in favour of the detection.

    Returns:
        A new COCO dict with the images and categories of ``previous``; per image, the kept
        detections (with ``score``, and compressed-RLE masks when they have masks) then the
        carried-over labels; annotation ids renumbered from 1.

    Raises:
        ValueError: detections for an image id not in ``previous``, or a mask whose size is not
            its image's.
    """
    images = {image["id"]: image for image in previous["images"]}
    unknown = sorted(set(detections) - set(images))
    if unknown:
        raise ValueError(f"detections for image ids {unknown[:8]} that the COCO dict lacks")
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in previous.get("annotations", []):
        by_image[ann["image_id"]].append(ann)
    annotations: list[dict[str, Any]] = []  # ids set at the end
    for image_id, image in images.items():
        hw = (int(image["height"]), int(image["width"]))
        found = [d for d in detections.get(image_id, ()) if d[1] >= score_threshold]
        kept = [_detection_annotation(d, image_id, hw) for d in found]
        carried = [a for a in by_image[image_id] if _best_iou(a, kept, hw) < merge_iou]
        annotations += kept + carried
    return {
        **previous,
        "images": [dict(image) for image in previous["images"]],
        "annotations": [{**ann, "id": i} for i, ann in enumerate(annotations, 1)],
    }


def _detection_annotation(
    detection: Detection, image_id: int, hw: tuple[int, int]
) -> dict[str, Any]:
    """A COCO annotation (without id) in the layout of :mod:`worker.coco`."""
    box, score, mask = detection
    ann: dict[str, Any] = {
        "image_id": image_id,
        "category_id": CATEGORY_ID,
        "bbox": [box.x0, box.y0, box.width, box.height],
        "area": float(box.width * box.height),
        "score": float(score),
        "iscrowd": 0,
    }
    if mask is not None:
        if mask.shape != hw:
            raise ValueError(f"image {image_id}: mask is {mask.shape} but the image is {hw}")
        rle = rle_encode(mask)
        ann["segmentation"] = {"size": list(hw), "counts": rle_to_coco_string(rle)}
        ann["area"] = float(rle_area(rle))
    return ann


def _best_iou(ann: dict[str, Any], kept: list[dict[str, Any]], hw: tuple[int, int]) -> float:
    """Highest IoU of a previous label with the kept detections (mask IoU where both have one)."""
    best = 0.0
    rle = _coco_rle(ann["segmentation"], hw) if ann.get("segmentation") else None
    for det in kept:
        if rle is not None and "segmentation" in det:
            iou = float(mask_utils.iou([det["segmentation"]], [rle], [0])[0][0])
        else:
            iou = box_iou(_xywh_box(ann["bbox"]), _xywh_box(det["bbox"]))
        best = max(best, iou)
    return best


def _coco_rle(segmentation: Any, hw: tuple[int, int]) -> dict[str, Any]:
    """pycocotools RLE of a COCO segmentation: compressed or uncompressed RLE, or polygons."""
    rle: dict[str, Any] = segmentation
    if isinstance(segmentation, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, *hw))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, *hw)
    return rle


def _xywh_box(bbox: Sequence[float]) -> Box:
    x, y, w, h = (float(v) for v in bbox)
    return Box(x, y, x + w, y + h)
