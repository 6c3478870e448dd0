"""Train the detector with SGD: interruptible, resumable exactly, validated as it goes.

**Checkpoints.** ``checkpoint_last.pt`` (:mod:`zerolabel.cad.saving`) is replaced atomically
every ``checkpoint_seconds`` of wall time and/or every ``checkpoint_every`` iterations, at the
end, and when SIGINT or SIGTERM arrives (:mod:`zerolabel.cad.stopping`: the iteration under
way is finished, saved, then :class:`~zerolabel.cad.stopping.TrainingInterrupted` is raised).

**Exact resume.** The learning rate is a function of the iteration; each step reseeds torch,
NumPy and Python's ``random`` from ``seed + iteration`` and takes its images from a permutation
drawn from the seed and the epoch. Model, optimizer and iteration are therefore the whole
state: on CPU a run interrupted and resumed ends with the weights of an uninterrupted one.

**Validation.** With held-out images (``val_fraction``, :mod:`zerolabel.cad.validation`),
AP50/AP/AR100 are computed at every checkpoint but those of an interrupt. A signal that arrives
during an evaluation stops it at the next image: the checkpoint is written before it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from zerolabel.cad.config import CadConfig
from zerolabel.cad.data import CocoDetectionDataset
from zerolabel.cad.model import _build_architecture, build_detector, read_checkpoint
from zerolabel.cad.saving import partial_path, save_checkpoint
from zerolabel.cad.stopping import StopSignals, TrainingInterrupted
from zerolabel.cad.validation import Validator, split_image_ids, validator_for
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.progress import Progress, stage

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
_RESUMABLE_FIELDS = ("iterations", "checkpoint_every", "checkpoint_seconds", "device")

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (:func:`time.monotonic`); tests pass their own."""


def train(
    config: CadConfig,
    coco_json: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    clock: Clock = time.monotonic,
) -> Path:
    """Train the detector with SGD and return the path of ``out_dir/checkpoint_last.pt``.

    With ``resume`` and a checkpoint in ``out_dir``, training continues from its iteration up to
    ``config.iterations``; only ``iterations``, ``checkpoint_every``, ``checkpoint_seconds`` and
    ``device`` may differ from the run that wrote it; ``resume=False`` starts over (the old
    checkpoint is replaced at the first save). A fresh run starts from ``config.init_weights``
    when set. The caller's random state is left as it was.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; the checkpoint holds the last iteration.
        ConfigError: the checkpoint in ``out_dir`` was trained with another config.
        WeightsError: the backbone checkpoint, ``init_weights`` or ``checkpoint_last.pt``
            cannot be used.
        ImageLoadError: an image of the COCO file cannot be read.
        FloatingPointError: the loss diverged (lower ``lr``).
        ValueError: the COCO file lists no images, or ``val_fraction`` leaves none to train on.
    """
    out_dir, images_dir, coco_json = Path(out_dir), Path(images_dir), Path(coco_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECKPOINT_NAME
    partial_path(path).unlink(missing_ok=True)  # a save killed half-way
    dataset, validation_ids = _datasets(config, coco_json, images_dir)
    validator = validator_for(config, coco_json, images_dir, out_dir, validation_ids)
    device = torch.device(config.device)
    with _preserved_rng(device):
        with stage(f"preparing the detector on {device}", done="ready"):
            model, optimizer, start = _start(config, path if resume else None, device)
        if validator is not None:
            validator.restart(start)
        if start >= config.iterations:
            logger.info("%s is already at iteration %d: nothing to train", path, start)
            return path
        run = _Run(config, model, optimizer, dataset, path, validator)
        _train_loop(run, start, progress, clock)
    return path


def _datasets(
    config: CadConfig, coco_json: Path, images_dir: Path
) -> tuple[CocoDetectionDataset, list[int]]:
    """The training images and the held-out image ids."""
    everything = CocoDetectionDataset(coco_json, images_dir, config.max_size, masks=config.masks)
    if len(everything) == 0:
        raise ValueError(f"{coco_json} lists no images to train on")
    ids = [image["id"] for image in everything.images]
    training, held_out = split_image_ids(ids, config.val_fraction, config.seed)
    if not held_out:
        return everything, []
    subset = CocoDetectionDataset(
        coco_json, images_dir, config.max_size, masks=config.masks, image_ids=set(training)
    )
    logger.info("training on %d images, validating on %d", len(subset), len(held_out))
    return subset, held_out


def _start(
    config: CadConfig, checkpoint_path: Path | None, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    """A fresh model and optimizer, or both restored from ``checkpoint_path`` when it exists."""
    checkpoint = None
    if checkpoint_path is not None and checkpoint_path.is_file():
        checkpoint = read_checkpoint(checkpoint_path)
        if "optimizer" not in checkpoint:
            raise WeightsError(
                f"{checkpoint_path} holds weights only (an export), no training state: "
                "move it away to start over"
            )
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


@dataclass
class _Run:
    """What a training loop works on."""

    config: CadConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    dataset: CocoDetectionDataset
    path: Path
    validator: Validator | None

    def step(self, iteration: int) -> float:
        """One SGD step; returns its loss."""
        config = self.config
        _seed_step(config.seed + iteration)  # flips, RPN and RoI sampling
        images, targets = _batch(self.dataset, config, iteration, torch.device(config.device))
        for group in self.optimizer.param_groups:
            group["lr"] = _learning_rate(config, iteration)
        losses = self.model(images, targets)
        loss = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss.item()} at iteration {iteration}: lower CadConfig.lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        self.optimizer.step()
        return float(loss.item())

    def save(self, done: int, stop: StopSignals) -> None:
        """Write the checkpoint, then validate unless a stop is (or gets) requested."""
        save_checkpoint(self.path, self.model, self.optimizer, done, self.config)
        if self.validator is not None and not stop.requested:
            self.validator(self.model, done, lambda: stop.requested)


def _train_loop(run: _Run, start: int, progress: bool, clock: Clock) -> None:
    config = run.config
    run.model.train()
    bar = Progress(
        "CAD training", config.iterations, unit="iteration", initial=start, enabled=progress
    )
    with bar, StopSignals() as stop:
        last_save = clock()
        for iteration in range(start, config.iterations):
            loss = run.step(iteration)
            done = iteration + 1
            bar.advance(1, note=f"loss {loss:.3f}")
            finished = done == config.iterations
            if not (finished or stop.requested or _due(config, done, clock() - last_save)):
                continue
            run.save(done, stop)
            if stop.signum is not None and not finished:
                raise TrainingInterrupted(run.path, done, stop.signum)
            last_save = clock()


def _due(config: CadConfig, done: int, elapsed_s: float) -> bool:
    """Whether a checkpoint is due after ``done`` iterations, ``elapsed_s`` after the last."""
    every = config.checkpoint_every
    seconds = config.checkpoint_seconds
    return (every is not None and done % every == 0) or (
        seconds is not None and elapsed_s >= seconds
    )


def _seed_step(seed: int) -> None:
    """Seed every generator a step may draw from (torch, NumPy, Python's ``random``)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _preserved_rng(device: torch.device) -> Iterator[None]:
    """Give the caller back its torch, NumPy and ``random`` states."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=_cuda_indices(device)):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


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


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
