"""``zerolabel rps-fit`` / ``train-found`` then ``predict`` and a worker with the fitted file
(tiny random ViT): folders, a fake Label Studio project, and the queue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from zerolabel.cli.main import main
from zerolabel.contract import DiscoveryRequest
from zerolabel.fitted import load_fitted
from zerolabel.settings import WorkerSettings

from tests.servers import image_server

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"
PHOTOS = ("000001.jpg", "000004.jpg", "000032.jpg")
SMALL = ["--max-side", "128"]  # short CPU forward passes, the same for fit and predict


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fit") / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(VOC / name, folder / name)
    return folder


def _fit(command: str, env: dict[str, str], *args: str) -> Path:
    result = CliRunner().invoke(main, [command, *args, *SMALL], env=env)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())  # stdout is the file's path alone
    assert path.is_file() and f"ZEROLABEL_FITTED={path}" in result.stderr
    return path


def _predict(photos: Path, out: Path, env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        main,
        ["predict", str(photos), "-o", str(out), "--document-root", str(photos), *SMALL, *args],
        env=env,
    )
    assert result.exit_code == 0, result.output
    tasks: list[dict[str, Any]] = json.loads((out / "tasks.json").read_text())
    return tasks


def _versions(tasks: list[dict[str, Any]]) -> set[str]:
    return {p["model_version"] for t in tasks for p in t["predictions"]}


@pytest.fixture(scope="module")
def rps_file(photos, tiny_env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rps")
    env = {**tiny_env, "ZEROLABEL_METHOD": "rps"}  # an env file for serving, before its fit
    return _fit("rps-fit", env, str(photos), "-o", str(out))


def test_rps_fit_writes_a_direction_predict_serves(rps_file, photos, tiny_env, tmp_path):
    fitted = load_fitted(
        rps_file, kind="rps", backbone="vit_small_patch16_224", weights="dino_vits16_depth2.pth"
    )
    assert fitted.tensors["direction"].shape == (384,)
    assert float(fitted.tensors["direction"].norm()) == pytest.approx(1.0, abs=1e-5)
    assert fitted.meta["images"] == len(PHOTOS) and fitted.meta["max_side"] == 128
    tasks = _predict(photos, tmp_path / "out", tiny_env, "-m", "rps", "--fitted", str(rps_file))
    settings = WorkerSettings.from_env(
        {**tiny_env, "ZEROLABEL_METHOD": "rps", "ZEROLABEL_FITTED": str(rps_file)}
    )
    # tasks.json holds rps's objects as boxes: its masks are cut on the patch grid
    assert _versions(tasks) == {settings.spec(max_side=128, shapes="box").model_version()}
    assert all(
        r["type"] in ("rectanglelabels", "brushlabels")
        for t in tasks
        for p in t["predictions"]
        for r in p["result"]
    )


def test_predict_refuses_a_direction_fitted_on_other_weights(rps_file, photos, tiny_env, tmp_path):
    env = {**tiny_env, "ZEROLABEL_WEIGHTS_TAG": "other"}
    result = CliRunner().invoke(
        main,
        ["predict", str(photos), "-o", str(tmp_path), "-m", "rps", "--fitted", str(rps_file)],
        env=env,
    )
    assert result.exit_code == 1
    assert "was fitted on vit_small_patch16_224 with weights 'dino_vits16_depth2.pth'" in (
        result.output
    )
    assert "weights 'other'" in result.output and result.output.count("Error:") == 1


def test_rps_needs_its_fitted_file(photos, tiny_env, tmp_path):
    result = CliRunner().invoke(
        main, ["predict", str(photos), "-o", str(tmp_path), "-m", "rps"], env=tiny_env
    )
    assert result.exit_code == 1
    assert "method 'rps' needs a fitted rps file: set ZEROLABEL_FITTED (or --fitted)" in (
        result.output
    )


def test_train_found_then_predict_with_the_head(photos, tiny_env, tmp_path):
    head = _fit("train-found", tiny_env, str(photos), "-o", str(tmp_path), "--epochs", "2")
    fitted = load_fitted(
        head, kind="found-head", backbone="vit_small_patch16_224", weights="dino_vits16_depth2.pth"
    )
    assert fitted.tensors["head_weight"].shape == (384,) and fitted.tensors["head_bias"].shape == (
        1,
    )
    assert fitted.meta["targets"] == "found tau=0.3" and fitted.meta["images"] == len(PHOTOS)
    plain = _predict(photos, tmp_path / "plain", tiny_env, "-m", "found")
    refined = _predict(photos, tmp_path / "head", tiny_env, "-m", "found", "--fitted", str(head))
    assert len(_versions(plain)) == len(_versions(refined)) == 1
    assert _versions(plain) != _versions(refined)
    again = _fit("train-found", tiny_env, str(photos), "-o", str(tmp_path), "--epochs", "2")
    assert again == head  # the same data and settings give the same file


class FakeProject:
    """The part of LabelStudioClient the fit commands use: one project's tasks."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = tasks
        self.asked: list[int] = []

    def tasks(self, project: int) -> list[dict[str, Any]]:
        self.asked.append(project)
        return self._tasks


def _rectangle(name: str, box_percent: tuple[float, float, float, float]) -> dict[str, Any]:
    with Image.open(VOC / name) as image:
        width, height = image.size
    x, y, w, h = box_percent
    return {
        "id": f"r-{name}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["object"]},
    }


@pytest.fixture
def project(photos, tiny_env, monkeypatch):
    """Three tasks served over HTTP: two annotated (one box each, one negative), one not."""
    with image_server(photos) as (url, handler):
        tasks = [
            {
                "id": 1,
                "data": {"image": f"{url}/{PHOTOS[0]}"},
                "annotations": [{"id": 11, "result": [_rectangle(PHOTOS[0], (10, 20, 50, 60))]}],
            },
            {"id": 2, "data": {"image": f"{url}/{PHOTOS[1]}"}, "annotations": []},
            {
                "id": 3,
                "data": {"image": f"{url}/{PHOTOS[2]}"},
                "annotations": [{"id": 13, "result": [_rectangle(PHOTOS[2], (0, 0, 100, 100))]}],
            },
        ]
        fake = FakeProject(tasks)
        monkeypatch.setattr("zerolabel.cli.fit.ls_client", lambda settings: fake)
        env = {**tiny_env, "ZEROLABEL_ALLOWED_HOSTS": url.removeprefix("http://")}
        yield env, fake, handler.hits


def test_rps_fit_reads_every_task_of_a_project(project, tmp_path):
    env, fake, hits = project
    path = _fit("rps-fit", env, "--project", "7", "-o", str(tmp_path))
    assert fake.asked == [7] and sorted(hits) == sorted(f"/{n}" for n in PHOTOS)
    fitted = torch.load(path, weights_only=True)
    assert fitted["meta"]["images"] == len(PHOTOS)


def test_train_found_from_annotations_learns_the_annotated_tasks_only(project, tmp_path):
    env, _, hits = project
    result = CliRunner().invoke(
        main,
        ["train-found", "--project", "7", "--from-annotations", "-o", str(tmp_path), *SMALL]
        + ["--epochs", "2"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "not annotated: task 2: no annotation" in result.stderr
    assert sorted(hits) == sorted(f"/{n}" for n in (PHOTOS[0], PHOTOS[2]))
    fitted = torch.load(Path(result.stdout.strip()), weights_only=True)
    assert fitted["meta"]["targets"] == "annotations" and fitted["meta"]["images"] == 2


@pytest.mark.parametrize("command", ["rps-fit", "train-found"])
def test_images_or_a_project_are_needed_not_both(command, photos, tiny_env, tmp_path):
    for args in ([], [str(photos), "--project", "7"]):
        result = CliRunner().invoke(main, [command, *args, "-o", str(tmp_path)], env=tiny_env)
        assert result.exit_code == 2 and "give INPUTS (images, folders, patterns) or --project" in (
            result.output
        )
    assert not list(tmp_path.iterdir())


def test_from_annotations_needs_a_project(photos, tiny_env, tmp_path):
    result = CliRunner().invoke(
        main, ["train-found", str(photos), "--from-annotations", "-o", str(tmp_path)], env=tiny_env
    )
    assert result.exit_code == 2 and "--from-annotations reads a project's annotations" in (
        result.output
    )


def test_a_worker_serves_rps_with_the_fitted_file_of_its_env_file(
    rps_file, photos, tmp_path, tiny_env
):
    """The serving step as printed by rps-fit: ZEROLABEL_METHOD=rps and ZEROLABEL_FITTED in
    the env file backend and workers share, through a real redis-server and worker."""
    from redis import Redis
    from zerolabel.queue.dispatch import Dispatcher

    from tests.servers import redis_server, stop, wait_for_workers

    with redis_server(tmp_path) as (redis_url, _):
        lines = {
            **tiny_env,
            "REDIS_URL": redis_url,
            "ZEROLABEL_METHOD": "rps",
            "ZEROLABEL_FITTED": str(rps_file),
            "ZEROLABEL_MAX_SIDE": "128",
            "ZEROLABEL_LOCAL_ROOTS": str(photos),
        }
        env_file = tmp_path / "zerolabel.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        clean = {k: v for k, v in os.environ.items() if not k.startswith("ZEROLABEL_")}
        clean.pop("REDIS_URL", None)
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "zerolabel.cli.main", "--env-file", str(env_file)]
                + ["worker", "--name", "rps-worker"],
                env=clean,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_workers(redis_url, 1, timeout_s=120)
            spec = WorkerSettings.from_env(lines).spec()
            assert spec.fitted == rps_file.name
            dispatcher = Dispatcher(Redis.from_url(redis_url), WorkerSettings.from_env(lines).queue)
            request = DiscoveryRequest(spec, str(photos / PHOTOS[1]), task_id=1)
            (outcome,) = dispatcher.collect([dispatcher.submit(request)], timeout_s=180)
            assert worker.poll() is None, log.read_text()
        finally:
            stop(worker)
    assert outcome.result is not None and outcome.result.error is None, outcome.reason
    assert outcome.result.model_version == spec.model_version()
    assert all(r.method == "rps" for r in outcome.result.regions)


def test_rps_fit_writes_the_top_representer_patches_beside_the_file(rps_file):
    folder = rps_file.with_name(f"{rps_file.stem}-representers")
    listing = json.loads((folder / "representers.json").read_text())
    assert list(listing) == ["all"] and 1 <= len(listing["all"]) <= 8
    values = [entry["value"] for entry in listing["all"]]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    assert {Path(entry["image"]).name for entry in listing["all"]} <= set(PHOTOS)
    with Image.open(folder / "all.png") as sheet:
        assert sheet.size[0] > 128


def test_a_project_fit_picks_the_threshold_from_the_accepted_boxes(project, tmp_path):
    env, _, hits = project
    result = CliRunner().invoke(
        main, ["rps-fit", "--project", "7", "-o", str(tmp_path), *SMALL], env=env
    )
    assert result.exit_code == 0, result.output
    fitted = load_fitted(
        Path(result.stdout.strip()),
        kind="rps",
        backbone="vit_small_patch16_224",
        weights="dino_vits16_depth2.pth",
    )
    threshold = fitted.arguments["picked_threshold"]
    assert 0.0 < threshold < 1.0 and fitted.meta["threshold_images"] == 2  # tasks 1 and 3
    assert "labels" not in fitted.arguments  # one label: one direction
    assert f"threshold {threshold:.2f} picked on 2 annotated image(s)" in result.stderr
    assert hits[f"/{PHOTOS[1]}"] >= 1 and hits[f"/{PHOTOS[0]}"] >= 2  # read again to pick


@pytest.fixture
def labelled_project(photos, tiny_env, monkeypatch):
    """Six tasks on the three photos, three boxed "cat" and three boxed "dog"."""
    with image_server(photos) as (url, _):
        tasks = []
        for index in range(6):
            name, label = PHOTOS[index % 3], ("cat", "dog")[index // 3]
            box = _rectangle(name, (5 + 10 * (index % 3), 10, 40, 50))
            box["value"]["rectanglelabels"] = [label]
            tasks.append(
                {
                    "id": index + 1,
                    "data": {"image": f"{url}/{name}"},
                    "annotations": [{"id": 100 + index, "result": [box]}],
                }
            )
        monkeypatch.setattr("zerolabel.cli.fit.ls_client", lambda settings: FakeProject(tasks))
        yield {**tiny_env, "ZEROLABEL_ALLOWED_HOSTS": url.removeprefix("http://")}


def test_labelled_projects_get_a_direction_per_label_and_labelled_predictions(
    labelled_project, photos, tmp_path
):
    path = _fit("rps-fit", labelled_project, "--project", "7", "-o", str(tmp_path / "fit"))
    fitted = torch.load(path, weights_only=True)
    assert fitted["arguments"]["labels"] == ["cat", "dog"]
    assert fitted["tensors"]["direction"].shape == (2, 384)
    assert fitted["meta"]["classes"] == {"cat": 3, "dog": 3}
    sheets = path.with_name(f"{path.stem}-representers")
    assert {p.name for p in sheets.glob("*.png")} == {"cat.png", "dog.png"}
    tasks = _predict(photos, tmp_path / "out", labelled_project, "-m", "rps", "--fitted", str(path))
    labels = {
        label
        for t in tasks
        for p in t["predictions"]
        for r in p["result"]
        for label in r["value"].get("rectanglelabels", []) + r["value"].get("brushlabels", [])
    }
    assert labels and labels <= {"cat", "dog"}
    agnostic = _fit(
        "rps-fit", labelled_project, "--project", "7", "--class-agnostic", "-o", str(tmp_path)
    )
    assert "labels" not in torch.load(agnostic, weights_only=True)["arguments"]


def test_a_paper_fit_is_served_under_preset_paper(photos, tiny_env, tmp_path):
    result = CliRunner().invoke(
        main, ["rps-fit", str(photos), "--preset", "paper", "-o", str(tmp_path)], env=tiny_env
    )
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert f"--fitted {path} --preset paper IMAGES" in result.stderr
    fitted = torch.load(path, weights_only=True)
    assert fitted["meta"]["square"] == 224 and fitted["meta"]["preset"] == "paper"
    assert fitted["arguments"] == {"cells_per_patch": 16}
    out = tmp_path / "out"
    predicted = CliRunner().invoke(
        main,
        ["predict", str(photos), "-o", str(out), "--document-root", str(photos)]
        + ["-m", "rps", "--fitted", str(path), "--preset", "paper"],
        env=tiny_env,
    )
    assert predicted.exit_code == 0, predicted.output
    tasks = json.loads((out / "tasks.json").read_text())
    settings = WorkerSettings.from_env(
        {**tiny_env, "ZEROLABEL_METHOD": "rps", "ZEROLABEL_FITTED": str(path)}
    )
    spec = settings.spec(preset="paper", shapes="box")
    assert spec.square == 224 and _versions(tasks) == {spec.model_version()}
