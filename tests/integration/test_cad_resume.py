"""``zerolabel train-cad`` stopped by a signal resumes exactly, and keeps one full checkpoint.

Every run is a real ``zerolabel train-cad`` in a subprocess (:mod:`tests.integration.cad_cli`:
one torch thread, deterministic algorithms) on the tiny COCO set of the other CAD tests, with a
frozen backbone, 4 iterations of one image and a checkpoint every 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from zerolabel.cad import load_detector, read_checkpoint

from tests.integration.cad_data import write_tiny_coco

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--iterations", "4", "--batch-size", "1", "--checkpoint-iterations", "2",
    "--min-size", "72", "--max-size", "96", "--trainable-backbone-layers", "0",
    "--no-masks", "--device", "cpu",
]  # fmt: skip


def _command(data: Path, out: Path, *hold: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.integration.cad_cli",
        *hold,
        "train-cad",
        "--coco",
        str(data / "coco.json"),
        "--images",
        str(data),
        "-o",
        str(out),
        *TINY,
    ]


def _environment() -> dict[str, str]:
    paths = [str(ROOT / "worker"), str(ROOT / "backend"), str(ROOT)]
    inherited = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
        "OMP_NUM_THREADS": "1",
    }


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=_environment(), capture_output=True, text=True)


def _interrupt(command: list[str], checkpoint: Path, release: Path, signum: int) -> tuple[int, str]:
    """Start ``command``, signal it once its first checkpoint exists, release it; its exit."""
    process = subprocess.Popen(
        command, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signum)
    release.touch()
    _, stderr = process.communicate()
    return process.returncode, stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_coco(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run's folder."""
    out = tmp_path_factory.mktemp("straight")
    result = _run(_command(data, out))
    assert result.returncode == 0, result.stderr
    return out


def _weights_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_a_run_stopped_by_ctrl_c_and_run_again_ends_as_an_uninterrupted_one(
    data: Path, straight: Path, tmp_path: Path
) -> None:
    signum = signal.SIGINT
    out = tmp_path / "cad"
    checkpoint = out / "checkpoint_last.pt"
    command = _command(data, out)
    held = _command(data, out, "--hold", str(checkpoint), str(tmp_path / "release"))
    status, stderr = _interrupt(held, checkpoint, tmp_path / "release", signum)
    assert status == 128 + signum, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert last_line == (
        f"interrupted at iteration 3/4: checkpoint {checkpoint} saved; "
        "run the same command again to resume"
    )
    stopped = read_checkpoint(checkpoint)
    assert stopped["iteration"] == 3  # the iteration under way when the signal came was saved
    assert stopped["optimizer"]["state"] and not list(out.glob("cad-*.pt"))
    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "at iteration 3" in resumed.stderr
    final, expected = read_checkpoint(checkpoint), read_checkpoint(straight / checkpoint.name)
    assert final["iteration"] == expected["iteration"] == 4
    _weights_equal(final["model"], expected["model"])
    (export,) = out.glob("cad-*.pt")
    assert export.name == next(straight.glob("cad-*.pt")).name  # same weights, same version


def test_a_run_keeps_one_full_checkpoint_and_a_weights_only_export(straight: Path) -> None:
    checkpoint = straight / "checkpoint_last.pt"
    (export,) = straight.glob("cad-*.pt")
    assert sorted(p.name for p in straight.iterdir()) == sorted([checkpoint.name, export.name])
    weights, full = read_checkpoint(export), read_checkpoint(checkpoint)
    assert set(weights) == {"format", "iteration", "config", "model"}  # no optimizer state
    assert set(full) == {*weights, "optimizer"} and full["optimizer"]["state"]
    _weights_equal(weights["model"], full["model"])
    assert export.stat().st_size < checkpoint.stat().st_size
    model, config = load_detector(export, "cpu")  # what workers load
    assert config.iterations == 4 and not model.training
