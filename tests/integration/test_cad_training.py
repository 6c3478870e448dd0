"""Training in process: clean stops on signals, checkpoint timing, atomic saves, validation.

Tiny runs (one 120x160 image a step, frozen backbone, 96 px input) of the data in
:mod:`tests.integration.cad_data`; signals are sent to this process from inside image loading,
so that they arrive within a known iteration.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from zerolabel.cad import (
    CadConfig,
    CocoDetectionDataset,
    TrainingInterrupted,
    build_detector,
    read_checkpoint,
    train,
)
from zerolabel.errors import WeightsError

from tests.integration.cad_data import tiny_config, write_tiny_coco

CONFIG = tiny_config(False, batch_size=1, checkpoint_every=None)  # 4 steps, saved at the end


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_coco(tmp_path_factory.mktemp("data"))


def _on_load(patch: pytest.MonkeyPatch, action: Callable[[int, str], None]) -> None:
    """Call ``action(load number from 1, file name)`` before every training image load."""
    load = CocoDetectionDataset.__getitem__
    count = 0

    def loading(self: CocoDetectionDataset, index: int) -> Any:
        nonlocal count
        count += 1
        action(count, self.images[index]["file_name"])
        return load(self, index)

    patch.setattr(CocoDetectionDataset, "__getitem__", loading)


def _signal_at(patch: pytest.MonkeyPatch, load: int, *signums: int) -> None:
    def send(count: int, name: str) -> None:
        if count == load:
            for signum in signums:
                os.kill(os.getpid(), signum)

    _on_load(patch, send)


def _train(config: CadConfig, data: Path, out: Path, **kwargs: Any) -> Path:
    return train(config, data / "coco.json", data, out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted run, and the caller's random numbers drawn after it."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    path = _train(CONFIG, data, tmp_path_factory.mktemp("straight"))
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    return {"path": path, "after": after}


def test_training_leaves_the_callers_random_state_alone(straight: dict[str, Any]) -> None:
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    assert straight["after"] == (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_sigterm_finishes_the_iteration_saves_it_and_resumes_exactly(
    data: Path, straight: dict[str, Any], tmp_path: Path
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.MonkeyPatch.context() as patch:
        _signal_at(patch, 2, signal.SIGTERM)  # during the second iteration
        with pytest.raises(TrainingInterrupted) as caught:
            _train(CONFIG, data, tmp_path)
    stop = caught.value
    assert (stop.iteration, stop.signum, stop.exit_status) == (2, signal.SIGTERM, 143)
    assert stop.checkpoint == tmp_path / "checkpoint_last.pt"
    assert read_checkpoint(stop.checkpoint)["iteration"] == 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are given back
    resumed = read_checkpoint(_train(CONFIG, data, tmp_path))
    expected = read_checkpoint(straight["path"])
    assert resumed["iteration"] == 4
    for key, value in expected["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for got, want in zip(
        resumed["optimizer"]["state"].values(), expected["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(got["momentum_buffer"], want["momentum_buffer"])


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    config = replace(CONFIG, checkpoint_every=1)
    before = signal.getsignal(signal.SIGINT)  # not Python's default when SIGINT is ignored
    with pytest.MonkeyPatch.context() as patch:
        _signal_at(patch, 2, signal.SIGINT, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt) as caught:
            _train(config, data, tmp_path)
    assert not isinstance(caught.value, TrainingInterrupted)
    assert read_checkpoint(tmp_path / "checkpoint_last.pt")["iteration"] == 1
    assert signal.getsignal(signal.SIGINT) == before  # the handler in place before is back


def test_a_signal_during_validation_stops_it_at_the_next_image_keeping_the_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    from zerolabel.cad import validation

    config = replace(CONFIG, val_fraction=0.67, checkpoint_every=2)  # 2 of 3 images held out
    real_detect = validation.detect
    detected: list[int] = []

    def interrupted_detect(model: Any, image: Any, **kwargs: Any) -> Any:
        detected.append(1)
        if len(detected) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the first image is evaluated
        return real_detect(model, image, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "detect", interrupted_detect)
        with pytest.raises(TrainingInterrupted) as caught:
            _train(config, data, tmp_path)
        assert (caught.value.iteration, caught.value.signum) == (2, signal.SIGINT)
        assert len(detected) == 1  # the second held-out image was never evaluated
        assert read_checkpoint(tmp_path / "checkpoint_last.pt")["iteration"] == 2
        assert not (tmp_path / "validation.json").exists()  # a given-up evaluation records nothing
        _train(config, data, tmp_path)  # the resumed run validates as usual
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["iteration"] for entry in history] == [4]
    assert len(detected) == 3 and history[0]["images"] == 2


def test_checkpoints_follow_the_wall_time_interval(data: Path, tmp_path: Path) -> None:
    now = 0.0

    def six_seconds_a_step(count: int, name: str) -> None:
        nonlocal now
        now += 6.0

    saved: list[int] = []
    from zerolabel.cad import training

    real_save = training.save_checkpoint

    def recording_save(path: Path, model: Any, optimizer: Any, iteration: int, config: Any) -> None:
        saved.append(iteration)
        real_save(path, model, optimizer, iteration, config)

    with pytest.MonkeyPatch.context() as patch:
        _on_load(patch, six_seconds_a_step)
        patch.setattr(training, "save_checkpoint", recording_save)
        _train(replace(CONFIG, checkpoint_seconds=10.0), data, tmp_path, clock=lambda: now)
    assert saved == [2, 4]  # 12 s after the start, then the end (18 s and 24 s: < 10 s apart)


def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    path = _train(replace(CONFIG, iterations=1), data, tmp_path)
    real_save = torch.save

    def disk_full(obj: Any, file: Any) -> None:
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", disk_full)
        with pytest.raises(OSError, match="No space left"):
            _train(replace(CONFIG, iterations=2), data, tmp_path)
    assert torch.save is real_save
    partial = tmp_path / "checkpoint_last.pt.partial"
    assert partial.read_bytes() == b"half a checkpoint"
    assert read_checkpoint(path)["iteration"] == 1
    _train(replace(CONFIG, iterations=2), data, tmp_path)
    assert read_checkpoint(path)["iteration"] == 2 and not partial.exists()


def test_held_out_images_are_not_trained_on_and_are_evaluated_at_each_checkpoint(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = replace(CONFIG, val_fraction=0.34, checkpoint_every=2)  # 1 of 3 images held out
    trained_on: set[str] = set()
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.INFO, "zerolabel"):
        _on_load(patch, lambda count, name: trained_on.add(name))
        _train(config, data, tmp_path)
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["iteration"] for entry in history] == [2, 4]
    for entry in history:
        assert entry["images"] == 1 and set(entry) == {"iteration", "images", "ap50", "ap", "ar100"}
        assert all(v is None or 0.0 <= v <= 1.0 for k, v in entry.items() if k.startswith("a"))
    assert len(trained_on) == 2  # the third image is only ever evaluated
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation")]
    assert len(lines) == 2 and lines[0].startswith("validation at iteration 2 (1 images): AP50 ")
    _train(replace(config, iterations=6), data, tmp_path)  # a resumed run extends the history
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["iteration"] for entry in history] == [2, 4, 6]


def test_a_validation_fraction_that_leaves_nothing_to_train_on_is_refused(
    data: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"holds out all 3 images.*--val-fraction"):
        _train(replace(CONFIG, val_fraction=0.9), data, tmp_path)


def test_a_detector_starts_from_the_weights_of_a_previous_one(straight: dict[str, Any]) -> None:
    previous = read_checkpoint(straight["path"])["model"]
    model = build_detector(replace(CONFIG, init_weights=str(straight["path"])))
    state = model.state_dict()
    assert state.keys() == previous.keys()
    for key, value in previous.items():
        assert torch.equal(state[key], value), key
    with pytest.raises(WeightsError, match=r"does not fit this detector.*missing keys roi_heads"):
        build_detector(replace(CONFIG, masks=True, init_weights=str(straight["path"])))
