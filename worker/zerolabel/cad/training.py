"""Train the detector with SGD, resumably, writing ``checkpoint_last.pt`` as it goes.

Checkpoints hold the model, the optimizer, the iteration count, the config and the marker
``format: "zerolabel-cad-1"`` (:data:`zerolabel.cad.model.CHECKPOINT_FORMAT`); they load with
``weights_only=True`` (:func:`zerolabel.cad.model.read_checkpoint`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from zerolabel.cad.config import CadConfig
from zerolabel.cad.data import CocoDetectionDataset
from zerolabel.cad.model import (
    CHECKPOINT_FORMAT,
    _build_architecture,
    build_detector,
    read_checkpoint,
)
from zerolabel.errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
_RESUMABLE_FIELDS = ("iterations", "checkpoint_every", "device")  # may change on resume


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


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
