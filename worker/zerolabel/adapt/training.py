"""The adaptation loop: DINO self-distillation on images, DoRA's tracked objects on clips.

Each step, every process reads its share of the step's items (:mod:`zerolabel.adapt.data`),
draws their views (:mod:`zerolabel.adapt.views`), runs the teacher on the global views (with
autocast on GPU), masks the clips' frames to the objects the teacher tracks, runs the student on
every view, and takes one AdamW step on the distillation loss; then the teacher follows the
student (EMA) and the centre follows the teacher's outputs (:mod:`zerolabel.adapt.state`).
Learning rate, weight decay, momentum and temperature come from
:mod:`zerolabel.adapt.schedules`. Threads read and crop the next step's items while a step
trains.

**Checkpoints** (:mod:`zerolabel.adapt.saving`) are written every ``checkpoint_seconds`` of
wall time and/or every ``checkpoint_every`` steps, at the end, and on SIGINT/SIGTERM
(:class:`~zerolabel.cad.stopping.StopSignals`: the step under way finishes, is saved, then
:class:`~zerolabel.cad.stopping.TrainingInterrupted` is raised). A step that fails before it
changes any weight (an unreadable file, a device out of memory) saves the steps done since the
last checkpoint before the error goes on.

**Exact resume.** The data order is a permutation per epoch drawn from the seed, every item's
views and drop-path decisions come from a generator seeded by the seed and the item's position
in the whole run, and the step's attention heads from the seed and the step; schedules are
functions of the step. Student, teacher, optimizer, centre and step are therefore the whole
state: on CPU a run interrupted and resumed ends with the weights of an uninterrupted one, and
a run split over processes computes what one process computes with the same batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.data import Inputs
from zerolabel.adapt.ddp import Distributed
from zerolabel.adapt.saving import CHECKPOINT_NAME, read_checkpoint, save_checkpoint
from zerolabel.adapt.state import TrainingState
from zerolabel.adapt.views import Plan
from zerolabel.cad.saving import partial_path
from zerolabel.cad.stopping import StopSignals, TrainingInterrupted
from zerolabel.errors import ConfigError, DiscoveryError
from zerolabel.io.images import ImageLimits
from zerolabel.progress import Progress, stage

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds from an arbitrary origin (:func:`time.monotonic`); tests pass their own."""


@dataclass(frozen=True)
class AdaptResult:
    """What a finished run wrote: the weights to serve, their metadata, the checkpoint."""

    weights: Path
    metadata: Path
    checkpoint: Path
    losses: list[float]


def adapt(
    config: AdaptConfig,
    inputs: Inputs,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    clock: Clock = time.monotonic,
    command: Sequence[str] | None = None,
    place: Distributed | None = None,
    limits: ImageLimits | None = None,
    workers: int | None = None,
) -> AdaptResult | None:
    """Adapt the backbone to ``inputs``; the files written (None on processes other than 0).

    With ``resume`` and a checkpoint in ``out_dir``, training continues from its step; only
    the fields of :data:`~zerolabel.adapt.config.RESUMABLE_FIELDS` may differ, and the inputs
    must have the same contents. The caller's random state is left as it was. ``workers``
    threads read and crop the items (default: the CPUs, at most 8), the next step's while the
    current one trains.

    Raises:
        TrainingInterrupted: SIGINT or SIGTERM arrived; the checkpoint holds the last step.
        ConfigError: the checkpoint in ``out_dir`` was made with another config or other
            inputs; the backbone cannot be trained; a step does not fit in memory.
        WeightsError: the starting weights or the checkpoint cannot be used.
        ImageLoadError: an input cannot be read any more (the steps done are saved first).
        FloatingPointError: the loss diverged.
    """
    place = place or Distributed()
    out_dir = Path(out_dir)
    path = out_dir / CHECKPOINT_NAME
    if place.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        partial_path(path).unlink(missing_ok=True)  # a save killed half-way
    if inputs.clip_frames != config.clip_frames:
        raise ConfigError(
            f"the inputs were collected for clips of {inputs.clip_frames} frames, the config "
            f"asks for {config.clip_frames}: collect them with the config's clip_frames"
        )
    if config.batch_size % place.world_size:
        raise ConfigError(
            f"--batch-size {config.batch_size} does not split over {place.world_size} "
            "processes: give a multiple of the process count"
        )
    device = torch.device(config.device)
    with _preserved_rng(device):
        saved = _saved_state(path, config, inputs) if resume else None
        with stage(f"preparing {config.backbone} on {device}", done="ready"):
            run = TrainingState.build(config, inputs, device, place, saved, limits or ImageLimits())
        if run.step < config.steps:
            run.check_memory()
            _loop(run, path, progress, clock, workers or _default_workers())
        else:
            logger.info("%s is already at step %d: nothing to train", path, run.step)
    if not place.main:
        return None
    weights = run.export(out_dir, command)
    return AdaptResult(weights, weights.with_suffix(".json"), path, list(run.losses))


def _saved_state(path: Path, config: AdaptConfig, inputs: Inputs) -> dict[str, Any] | None:
    """The checkpoint in the run's folder, once it is known to continue this run."""
    if not path.is_file():
        return None
    saved = read_checkpoint(path)
    changes = AdaptConfig.from_dict(saved["config"]).changes(config)
    if changes:
        raise ConfigError(
            f"{path} was trained with another config: {', '.join(changes)}. Use a new --out "
            "folder, or the checkpoint's settings to resume it."
        )
    if saved["inputs"] != inputs.digest:
        raise ConfigError(
            f"{path} was trained on other inputs (their contents changed): use a new --out "
            "folder, or the same files to resume it."
        )
    logger.info("resuming %s at step %d", path, saved["step"])
    return saved


class _Loader:
    """Reads and crops the next step's items while the current step trains (threads).

    Every random choice comes from seeded generators, so what is prepared ahead is what the
    step would have prepared itself; a read error surfaces in the step it belongs to.
    """

    def __init__(self, run: TrainingState, workers: int) -> None:
        self.run = run
        self.items = ThreadPoolExecutor(workers, thread_name_prefix="adapt-items")
        self.ahead = ThreadPoolExecutor(1, thread_name_prefix="adapt-ahead")
        self.pending: tuple[int, Future[Plan]] | None = None

    def views(self, step: int) -> Plan:
        if self.pending is None or self.pending[0] != step:
            self.pending = (step, self.ahead.submit(self.run.prepare, step, self.items))
        prepared = self.pending[1].result()
        self.pending = None
        if step + 1 < self.run.config.steps:
            self.pending = (step + 1, self.ahead.submit(self.run.prepare, step + 1, self.items))
        return prepared

    def close(self) -> None:
        self.ahead.shutdown(wait=True, cancel_futures=True)
        self.items.shutdown(wait=True, cancel_futures=True)


def _loop(run: TrainingState, path: Path, progress: bool, clock: Clock, workers: int) -> None:
    config, place = run.config, run.place
    bar = Progress(
        "adapting", config.steps, unit="step", initial=run.step, enabled=progress and place.main
    )
    loader = _Loader(run, workers)
    with bar, StopSignals() as stop, contextlib.closing(loader):
        last_save = started = clock()
        saved_step = run.step
        for step in range(run.step, config.steps):
            try:
                loss = run.train_step(step, loader.views(step))
            except (DiscoveryError, torch.OutOfMemoryError) as exc:
                if run.step > saved_step and place.main:
                    save_checkpoint(path, run.state())  # the steps done so far stay
                if isinstance(exc, torch.OutOfMemoryError):
                    raise _out_of_memory(config, step) from None
                raise
            run.step = step + 1
            run.losses.append(loss)
            run.elapsed_s, started = run.elapsed_s + clock() - started, clock()
            bar.advance(1, note=f"loss {loss:.4f}")
            finished = run.step == config.steps
            stopping = place.any(stop.requested, run.device)
            if (
                finished
                or stopping
                or place.any(_due(config, run.step, clock() - last_save), run.device)
            ):
                if place.main:
                    save_checkpoint(path, run.state())
                saved_step, last_save = run.step, clock()
            if stopping and not finished:
                raise TrainingInterrupted(path, run.step, stop.signum or signal.SIGTERM)


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _due(config: AdaptConfig, done: int, elapsed_s: float) -> bool:
    every, seconds = config.checkpoint_every, config.checkpoint_seconds
    return (every is not None and done % every == 0) or (
        seconds is not None and elapsed_s >= seconds
    )


def _out_of_memory(config: AdaptConfig, step: int) -> ConfigError:
    advice = "" if config.grad_checkpointing else ", or add --grad-checkpointing"
    return ConfigError(
        f"step {step} ran out of device memory with --batch-size {config.batch_size}: lower "
        f"--batch-size, --local-crops or --objects{advice}; the checkpoint of the steps done "
        "is kept"
    )


@contextlib.contextmanager
def _preserved_rng(device: torch.device) -> Iterator[None]:
    """Give the caller back torch's random state (the loop draws from its own generators)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
