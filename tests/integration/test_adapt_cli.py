"""``zerolabel adapt`` as users run it: its files, the adapted weights served by ``predict -c``
and ``cluster -c`` under a new model_version, a clean stop on Ctrl-C, and bad inputs refused
with one line before anything trains.

The backbone is the depth-2 ViT-S/16 of ``tiny_env`` (seeded random weights in DINO's layout).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from zerolabel.adapt.saving import read_checkpoint
from zerolabel.cli.main import main

from tests.unit.test_adapt_data import write_images, write_video

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
TINY = [
    "--batch-size", "2", "--out-dim", "32", "--global-size", "32", "--local-size", "16",
    "--local-crops", "2", "--clip-frames", "3", "--frame-step", "2", "--max-side", "48",
    "--device", "cpu",
]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    write_images(folder / "photos", 3, size=48)
    write_video(folder / "walk.mp4", 12, size=48)
    return folder


@pytest.fixture(scope="module")
def adapted(
    media: Path, tiny_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The weights a 3-step run writes."""
    out = tmp_path_factory.mktemp("adapted")
    torch.set_num_threads(1)
    result = CliRunner().invoke(
        main, ["adapt", str(media), "-o", str(out), "--steps", "3", *TINY], env=tiny_env
    )
    assert result.exit_code == 0, result.output
    (weights,) = out.glob("adapted-*.pth")
    assert f'{{"checkpoint": "{weights.name}"}}' in result.output
    return weights


def test_the_run_writes_weights_named_by_their_digest_and_what_made_them(
    adapted: Path, tiny_env: dict[str, str]
) -> None:
    meta = json.loads(adapted.with_suffix(".json").read_text())
    assert meta["file"] == adapted.name and adapted.name == f"adapted-{meta['sha256'][:12]}.pth"
    assert meta["base_checkpoint"] == Path(tiny_env["ZEROLABEL_CHECKPOINT"]).name
    assert meta["base_weights"].startswith("file:")
    assert meta["inputs"]["images"] == 3 and meta["inputs"]["videos"] == 1
    assert len(meta["inputs"]["digest"]) == 64
    assert meta["steps"] == 3 and [point["step"] for point in meta["loss_curve"]] == [1, 2, 3]
    command = meta["command"]
    assert command[:2] == ["zerolabel", "adapt"] and meta["architecture"]["depth"] == 2
    assert command[command.index("--checkpoint") + 1] == tiny_env["ZEROLABEL_CHECKPOINT"]
    assert command[command.index("--steps") + 1] == "3" and "--lr" in command
    state = torch.load(adapted, weights_only=True)
    base = torch.load(tiny_env["ZEROLABEL_CHECKPOINT"], weights_only=True)
    assert set(state) == set(base)  # the backbone alone, timm's names, no head
    assert not torch.equal(state["blocks.1.attn.qkv.weight"], base["blocks.1.attn.qkv.weight"])


def _predict(tmp_path: Path, env: dict[str, str], *checkpoint: str) -> dict:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    shutil.copy(VOC / "000001.jpg", images / "a.jpg")
    out = tmp_path / ("out" + str(len(checkpoint)))
    args = [
        "predict",
        str(images),
        "-o",
        str(out),
        "--max-side",
        "128",
        "--document-root",
        str(images),
    ]
    result = CliRunner().invoke(main, [*args, *checkpoint], env=env)
    assert result.exit_code == 0, result.output
    return json.loads((out / "tasks.json").read_text())


def test_predict_and_cluster_load_the_adapted_weights_under_a_new_model_version(
    adapted: Path, tiny_env: dict[str, str], tmp_path: Path
) -> None:
    (base,) = _predict(tmp_path, tiny_env)
    (task,) = _predict(tmp_path, tiny_env, "-c", str(adapted))
    old, new = base["predictions"][0]["model_version"], task["predictions"][0]["model_version"]
    assert old != new
    tasks = tmp_path / "out2" / "tasks.json"
    args = ["cluster", str(tasks), "-k", "1", "-c", str(adapted), "-o", str(tmp_path / "clustered")]
    result = CliRunner().invoke(
        main, [*args, "--document-root", str(tmp_path / "images")], env=tiny_env
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clustered" / "tasks.json").is_file()


def _environment(tiny_env: dict[str, str]) -> dict[str, str]:
    paths = [str(ROOT / "worker"), str(ROOT / "backend"), str(ROOT)]
    inherited = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        **tiny_env,
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
        "OMP_NUM_THREADS": "1",
    }


def test_ctrl_c_saves_the_step_under_way_and_the_same_command_resumes(
    media: Path, tiny_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "zerolabel.cli.main", "adapt", str(media), "-o", str(out)]
    command += ["--steps", "12", "--checkpoint-steps", "1", *TINY]
    env = _environment(tiny_env)
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    checkpoint = out / "adapt_last.pt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130, stderr
    stopped = read_checkpoint(checkpoint)["step"]
    assert 1 <= stopped < 12
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted at step {stopped}/12: checkpoint {checkpoint} saved; run the same "
        "command again to resume"
    )
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {checkpoint} at step {stopped}" in resumed.stderr
    assert read_checkpoint(checkpoint)["step"] == 12 and list(out.glob("adapted-*.pth"))


def _refused(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["adapt", *args, *TINY], env=env)
    return result.exit_code, [
        line for line in result.output.splitlines() if line.startswith("Error:")
    ]


def test_a_corrupt_video_is_named_before_any_model_loads(
    tiny_env: dict[str, str], tmp_path: Path
) -> None:
    write_images(tmp_path / "in", 2, size=48)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 4000)
    status, errors = _refused([str(tmp_path / "in"), "-o", str(tmp_path / "out")], tiny_env)
    assert status == 1 and len(errors) == 1
    assert errors[0].startswith(f"Error: {tmp_path / 'in' / 'broken.mp4'}: not a readable video")
    assert not (tmp_path / "out").exists()


def test_a_folder_with_no_images_is_a_usage_error(tiny_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    status, errors = _refused([str(tmp_path / "empty"), "-o", str(tmp_path / "out")], tiny_env)
    assert status == 2
    assert errors[0].startswith(f"Error: {tmp_path / 'empty'} holds no image or video")


def test_a_checkpoint_of_another_architecture_is_refused_before_training(
    media: Path, tiny_env: dict[str, str], tmp_path: Path
) -> None:
    args = [str(media), "-o", str(tmp_path / "out"), "-b", "dino_vits16"]  # depth 12, file: 2
    status, errors = _refused(args, {**tiny_env, "ZEROLABEL_BACKBONE_KWARGS": ""})
    assert status == 1 and len(errors) == 1
    assert "does not fit" in errors[0] and "blocks.2" in errors[0]
    assert not (tmp_path / "out" / "adapt_last.pt").exists()
