"""``adapt`` stopped by a signal, or by a file that stops reading, resumes exactly: the same
weights as a run that was never stopped. A step too large for the memory is refused first.

A tiny run: a depth-2 ViT-S/16 with seeded random weights, 32 px global and 16 px local views,
four images and one video, one torch thread.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from zerolabel.adapt import memory, state, training
from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.data import Inputs, collect
from zerolabel.adapt.saving import read_checkpoint
from zerolabel.cad.stopping import TrainingInterrupted
from zerolabel.errors import ConfigError, ImageLoadError

from tests.unit.test_adapt_data import write_images, write_video

CONFIG = AdaptConfig(
    backbone="vit_small_patch16_224",
    random_weights=True,
    model_kwargs={"depth": 2},
    offline=True,
    steps=4,
    batch_size=2,
    out_dim=32,
    head_hidden_dim=32,
    head_bottleneck_dim=16,
    global_size=32,
    local_size=16,
    local_crops=2,
    clip_frames=3,
    frame_step=2,
    max_side=48,
    checkpoint_seconds=None,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    folder = tmp_path_factory.mktemp("media")
    write_images(folder / "photos", 4, size=48)
    write_video(folder / "walk.mp4", 12, size=48)
    return collect([folder], clip_frames=3, frame_step=2, progress=False)


@pytest.fixture(scope="module")
def straight(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> training.AdaptResult:
    """The uninterrupted run."""
    torch.set_num_threads(1)
    result = training.adapt(CONFIG, inputs, tmp_path_factory.mktemp("straight"), progress=False)
    assert result is not None
    return result


def _same_states(got: dict, expected: dict) -> None:
    for part in ("student", "teacher_net"):
        assert got[part].keys() == expected[part].keys()
        for key, value in expected[part].items():
            assert torch.equal(got[part][key], value), (part, key)
    assert torch.equal(got["center"], expected["center"])
    assert got["losses"] == expected["losses"]


def _interrupt_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """SIGINT arrives while ``step`` is under way."""
    original = state.TrainingState.train_step

    def train_step(self: state.TrainingState, index: int, *args: object) -> float:
        if index == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, index, *args)

    monkeypatch.setattr(state.TrainingState, "train_step", train_step)


def test_the_run_learns_and_writes_its_files(straight: training.AdaptResult) -> None:
    assert straight.weights.name.startswith("adapted-") and straight.weights.suffix == ".pth"
    assert len(straight.losses) == 4 and all(loss > 0 for loss in straight.losses)
    saved = read_checkpoint(straight.checkpoint)
    assert saved["step"] == 4 and saved["base_weights"] == "random"
    student, teacher = saved["student"], saved["teacher_net"]
    moved = [
        k for k in teacher if k.startswith("backbone.") and not torch.equal(student[k], teacher[k])
    ]
    assert moved, "the teacher is an average of past students, not the student"


def test_a_run_stopped_by_ctrl_c_and_run_again_ends_as_an_uninterrupted_one(
    inputs: Inputs, straight: training.AdaptResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted) as stopped:
        training.adapt(CONFIG, inputs, tmp_path, progress=False)
    assert stopped.value.iteration == 2 and stopped.value.exit_status == 130
    assert read_checkpoint(tmp_path / "adapt_last.pt")["step"] == 2
    assert not list(tmp_path.glob("adapted-*"))
    monkeypatch.undo()
    resumed = training.adapt(CONFIG, inputs, tmp_path, progress=False)
    assert resumed is not None and resumed.weights.name == straight.weights.name
    _same_states(read_checkpoint(resumed.checkpoint), read_checkpoint(straight.checkpoint))


def test_a_file_that_stops_reading_keeps_the_steps_done(
    inputs: Inputs, straight: training.AdaptResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = state.TrainingState.pixels
    reads = []

    def failing(self: state.TrainingState, item: object) -> torch.Tensor:
        reads.append(item)
        if len(reads) > 3 * CONFIG.batch_size:  # the fourth step's items
            raise ImageLoadError("walk.mp4", "the disk went away")
        return original(self, item)

    monkeypatch.setattr(state.TrainingState, "pixels", failing)
    with pytest.raises(ImageLoadError, match="the disk went away"):
        training.adapt(CONFIG, inputs, tmp_path, progress=False)
    assert read_checkpoint(tmp_path / "adapt_last.pt")["step"] == 3  # no checkpoint was due
    monkeypatch.undo()
    resumed = training.adapt(CONFIG, inputs, tmp_path, progress=False)
    assert resumed is not None and resumed.weights.name == straight.weights.name


def test_a_checkpoint_of_another_run_is_not_resumed(
    inputs: Inputs, straight: training.AdaptResult, tmp_path: Path
) -> None:
    folder = straight.checkpoint.parent
    with pytest.raises(ConfigError, match=r"another config: lr \(0.0005 -> 0.001\)"):
        training.adapt(AdaptConfig(**{**CONFIG.__dict__, "lr": 0.001}), inputs, folder)
    fewer = Inputs(inputs.images[:2], inputs.videos, inputs.clip_frames)
    with pytest.raises(ConfigError, match="other inputs"):
        training.adapt(CONFIG, fewer, folder)


def test_a_step_too_large_for_the_memory_is_refused_before_training(
    inputs: Inputs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "free_bytes", lambda device: 1 << 20)  # 1 MiB free
    with pytest.raises(ConfigError, match=r"needs about .* GiB .* but 0.0 GiB are free"):
        training.adapt(CONFIG, inputs, tmp_path, progress=False)
    assert not (tmp_path / "adapt_last.pt").exists()
    assert memory.HEADROOM < 1
