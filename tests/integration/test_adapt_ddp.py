"""``torchrun --nproc_per_node 2 -m zerolabel.cli.main adapt`` (DistributedDataParallel on
gloo, CPU) computes the weights one process computes with the same global batch.

Both runs are the real command on a depth-2 ViT-S/16 with seeded random weights, three images
and a video, two items per step; each process has one torch thread. Sums split over processes
add up in another order, so the weights agree to float precision, not to the bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zerolabel.adapt.saving import read_checkpoint

from tests.unit.test_adapt_data import write_images, write_video

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--steps", "3", "--batch-size", "2", "--out-dim", "32", "--global-size", "32",
    "--local-size", "16", "--local-crops", "2", "--clip-frames", "3", "--frame-step", "2",
    "--max-side", "48", "--device", "cpu",
]  # fmt: skip


def _environment(tiny_env: dict[str, str]) -> dict[str, str]:
    paths = [str(ROOT / "worker"), str(ROOT / "backend"), str(ROOT)]
    inherited = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        **tiny_env,
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
        "OMP_NUM_THREADS": "1",
    }


def _adapt(launcher: list[str], media: Path, out: Path, env: dict[str, str]) -> None:
    command = [*launcher, "-m", "zerolabel.cli.main", "adapt", str(media), "-o", str(out), *TINY]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    write_images(folder, 3, size=48)
    write_video(folder / "walk.mp4", 12, size=48)
    return folder


def test_two_processes_compute_the_weights_of_one_with_the_same_batch(
    media: Path, tmp_path: Path, tiny_env: dict[str, str]
) -> None:
    env = _environment(tiny_env)
    _adapt([sys.executable], media, tmp_path / "one", env)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    _adapt(torchrun, media, tmp_path / "two", env)
    one = read_checkpoint(tmp_path / "one" / "adapt_last.pt")
    two = read_checkpoint(tmp_path / "two" / "adapt_last.pt")
    assert one["step"] == two["step"] == 3
    start = torch.load(tiny_env["ZEROLABEL_CHECKPOINT"], weights_only=True)
    for part in ("student", "teacher_net"):
        for key, value in one[part].items():
            assert torch.allclose(two[part][key], value, rtol=1e-4, atol=1e-6), (part, key)
    qkv = "backbone.blocks.1.attn.qkv.weight"
    moved = (one["student"][qkv] - start["blocks.1.attn.qkv.weight"]).abs().max()
    differ = (one["student"][qkv] - two["student"][qkv]).abs().max()
    assert differ < moved / 100  # agreement far tighter than what training moved
    assert one["losses"] == pytest.approx(two["losses"], rel=1e-4)
    assert torch.allclose(one["center"], two["center"], rtol=1e-4, atol=1e-6)
    written = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert [name.rsplit(".", 1)[1] for name in written] == ["pt", "json", "pth"]
