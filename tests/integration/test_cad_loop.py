"""Pseudo-labels -> train-cad -> the cad method, through the CLI and the worker runtime."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from zerolabel import progress
from zerolabel.cad import CadConfig, build_detector, read_checkpoint
from zerolabel.cli.main import main
from zerolabel.contract import DiscoveryRequest
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings

SMALL = ["--min-size", "224", "--max-size", "320", "--device", "cpu"]  # short CPU steps
VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_env):
    root = tmp_path_factory.mktemp("cad")
    photos = root / "photos"
    photos.mkdir()
    for name in ("000004.jpg", "000007.jpg", "000032.jpg"):
        shutil.copy(VOC / name, photos / name)
    env = {
        **tiny_env,
    }
    runner = CliRunner()
    pseudo = runner.invoke(
        main,
        [
            "predict",
            str(photos),
            "-m",
            "maskcut",
            "-o",
            str(root / "pseudo"),
            "--document-root",
            str(photos),
        ],
        env=env,
    )
    assert pseudo.exit_code == 0, pseudo.output
    exported = runner.invoke(  # train on what `zerolabel export` makes of the pre-labels
        main,
        [
            "export",
            "--from-file",
            str(root / "pseudo" / "tasks.json"),
            "--source",
            "predictions",
            "-f",
            "coco",
            "-o",
            str(root / "export"),
        ],
    )
    assert exported.exit_code == 0, exported.output
    result = runner.invoke(
        main,
        [
            "train-cad",
            "--coco",
            str(root / "export" / "coco.json"),
            "--images",
            str(photos),
            "-o",
            str(root / "cad"),
            "--iterations",
            "2",
            *SMALL,
        ],
    )
    assert result.exit_code == 0, result.output
    (checkpoint,) = (root / "cad").glob("cad-*.pt")
    assert f"zerolabel use --project ID cad --detector {checkpoint}" in result.output
    return root, photos, checkpoint


def test_predict_with_the_trained_detector(trained):
    root, photos, checkpoint = trained
    out = root / "cad-pred"
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(photos),
            "-m",
            "cad",
            "--cad-checkpoint",
            str(checkpoint),
            "-p",
            "score_threshold=0.0",
            "-o",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == 3
    versions = {t["predictions"][0]["model_version"] for t in tasks}
    assert len(versions) == 1 and versions.pop().startswith("zerolabel-cad-cad-")
    items = [r for t in tasks for r in t["predictions"][0]["result"]]
    boxes = [r for r in items if r["type"] == "rectanglelabels"]
    assert items and all(0 <= r["value"]["x"] <= 100 for r in boxes)
    assert all(r["type"] in ("rectanglelabels", "brushlabels") for r in items)  # mask or box


def test_the_worker_serves_the_cad_method(trained):
    root, photos, checkpoint = trained
    settings = WorkerSettings.from_env(
        {
            "ZEROLABEL_CAD_CHECKPOINT": str(checkpoint),
            "ZEROLABEL_DEVICE": "cpu",
            "ZEROLABEL_LOCAL_ROOTS": str(photos),
        }
    )
    spec = settings.spec(method="cad", params={"score_threshold": 0.0})
    runtime = WorkerRuntime(settings)
    result = runtime.discover(DiscoveryRequest(spec, str(photos / "000004.jpg"), task_id=1))
    assert result.error is None and result.regions
    h, w = result.image_hw
    assert all(
        0 <= r.box.x0 < r.box.x1 <= w and 0 <= r.box.y0 < r.box.y1 <= h for r in result.regions
    )
    assert all(r.method == "cad" and r.mask is not None for r in result.regions)
    other = WorkerSettings.from_env(
        {"ZEROLABEL_CAD_CHECKPOINT": str(root / "other.pt"), "ZEROLABEL_LOCAL_ROOTS": str(photos)}
    )
    refused = WorkerRuntime(other).discover(
        DiscoveryRequest(spec, str(photos / "000004.jpg"), task_id=2)
    )
    assert refused.error and "ZEROLABEL_CAD_CHECKPOINT" in refused.error


def _self_train(root, photos, checkpoint, out, *options):
    """A self-training round of one step at learning rate 0 (its weights are its start)."""
    calls = []
    real_track = progress.track

    def recording_track(*args, **kwargs):
        calls.append((args, {"desc": args[1] if len(args) > 1 else kwargs.get("desc")}))
        return real_track(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress, "track", recording_track)
        result = CliRunner().invoke(
            main,
            [
                "self-train",
                "--checkpoint",
                str(checkpoint),
                "--coco",
                str(root / "export" / "coco.json"),
                "--images",
                str(photos),
                "-o",
                str(out),
                "--iterations",
                "1",
                "--lr",
                "0",
                *SMALL,
                *options,
            ],
        )
    assert result.exit_code == 0, result.output
    return result, calls


def _parameters(path):
    """The learnt weights of a detector file (BatchNorm statistics move even at lr 0)."""
    model = read_checkpoint(path)["model"]
    return {k: v for k, v in model.items() if not k.endswith(_BATCHNORM_STATISTICS)}


_BATCHNORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def round2(trained):
    root, photos, checkpoint = trained
    out = root / "round2"
    result, bars = _self_train(root, photos, checkpoint, out)
    return out, result, bars


def test_self_training_round_writes_labels_and_a_new_detector(trained, round2):
    root, photos, checkpoint = trained
    out, result, bars = round2
    labels = json.loads((out / "coco.json").read_text())
    previous = json.loads((root / "export" / "coco.json").read_text())
    assert len(labels["images"]) == len(previous["images"])
    assert len(labels["annotations"]) >= 1
    assert list(out.glob("cad-*.pt"))
    summary = re.search(
        r"round labels: (\d+) objects = (\d+) detections kept \(score >= 0\.7\) \+ (\d+) "
        r"previous labels carried over \(previous round: (\d+)\)",
        result.output,
    )
    assert summary, result.output
    total, kept, carried, before = (int(n) for n in summary.groups())
    assert total == len(labels["annotations"]) == kept + carried
    assert before == len(previous["annotations"])
    detecting = [args for args, kwargs in bars if kwargs.get("desc") == "detecting"]
    assert len(detecting) == 1 and len(detecting[0][0]) == len(previous["images"])
    # the new detector continued from the previous one (nothing moved at lr 0)
    (new,) = out.glob("cad-*.pt")
    assert read_checkpoint(new)["config"]["init_weights"] == str(checkpoint.resolve())
    start, got = _parameters(checkpoint), _parameters(new)
    assert start.keys() == got.keys()
    assert all(torch.equal(got[k], v) for k, v in start.items())


def test_self_training_from_scratch_starts_from_a_fresh_detector(trained):
    root, photos, checkpoint = trained
    out = root / "round2-scratch"
    _self_train(root, photos, checkpoint, out, "--from-scratch")
    (new,) = out.glob("cad-*.pt")
    config = CadConfig.from_dict(read_checkpoint(new)["config"])
    assert config.init_weights is None
    fresh = {
        k: v
        for k, v in build_detector(config).state_dict().items()
        if not k.endswith(_BATCHNORM_STATISTICS)
    }
    got = _parameters(new)
    assert all(torch.equal(got[k], v) for k, v in fresh.items())
    assert not all(torch.equal(got[k], v) for k, v in _parameters(checkpoint).items())


def test_a_self_training_round_run_again_resumes_on_its_labels(trained, round2):
    root, photos, checkpoint = trained
    out, _, _ = round2
    labels = (out / "coco.json").read_bytes()
    (export,) = out.glob("cad-*.pt")
    result, bars = _self_train(root, photos, checkpoint, out)
    assert f"resuming this round, on its labels {out / 'coco.json'}" in result.output
    assert "round labels:" not in result.output
    assert not [kwargs for _, kwargs in bars if kwargs.get("desc") == "detecting"]
    assert (out / "coco.json").read_bytes() == labels and list(out.glob("cad-*.pt")) == [export]
    other = CliRunner().invoke(
        main,
        ["self-train", "--checkpoint", str(checkpoint), "--coco", str(root / "export/coco.json")]
        + ["--images", str(photos), "-o", str(out), "--score-threshold", "0.65", *SMALL],
    )
    assert other.exit_code == 1
    assert f"Error: {out} holds the training run of another self-training round" in other.output


def test_a_worker_started_from_an_env_file_serves_the_detector(trained, tmp_path, tiny_env):
    """The loop's serving step as documented: ZEROLABEL_METHOD=cad and the detector's file in
    the env file that backend and workers share, ``zerolabel --env-file FILE worker``."""
    from redis import Redis
    from zerolabel.queue.dispatch import Dispatcher

    from tests.servers import redis_server, stop, wait_for_workers

    _, photos, checkpoint = trained
    with redis_server(tmp_path) as (redis_url, _):
        settings_lines = {
            **tiny_env,  # the ViT settings stay in the shared file; a cad worker ignores them
            "REDIS_URL": redis_url,
            "ZEROLABEL_METHOD": "cad",
            "ZEROLABEL_CAD_CHECKPOINT": str(checkpoint),
            "ZEROLABEL_LOCAL_ROOTS": str(photos),
        }
        env_file = tmp_path / "zerolabel.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in settings_lines.items()))
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ZEROLABEL_")}
        clean.pop("REDIS_URL", None)
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "zerolabel.cli.main", "--env-file", str(env_file)]
                + ["worker", "--name", "cad-worker"],
                env=clean,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_workers(redis_url, 1, timeout_s=120)
            settings = WorkerSettings.from_env(settings_lines)
            spec = settings.spec(params={"score_threshold": 0.0})
            dispatcher = Dispatcher(Redis.from_url(redis_url), settings.queue)
            request = DiscoveryRequest(spec, str(photos / "000004.jpg"), task_id=1)
            (outcome,) = dispatcher.collect([dispatcher.submit(request)], timeout_s=180)
            assert worker.poll() is None, log.read_text()
        finally:
            stop(worker)
    assert outcome.result is not None and outcome.result.error is None, outcome.reason
    assert outcome.result.regions and all(r.method == "cad" for r in outcome.result.regions)
