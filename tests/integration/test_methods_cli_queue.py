"""DINO-seg, DSS and ProMerge end to end: ``zerolabel predict`` and backend -> Redis -> worker.

The tiny random ViT gives arbitrary objects; what is checked is that each method runs through
both paths with its registered defaults (DINO-seg reading the attention the pipeline passes),
that its results are well-formed and named after it, and that projects select it by name.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from zerolabel.cli.main import main
from zerolabel.labelstudio.brush import brush_rle_decode
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.servers import image_server, redis_server, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = (EXAMPLES / "label_config.xml").read_text()
PHOTOS = ("000003.jpg", "000005.jpg", "000032.jpg")
NEW_METHODS = ("dinoseg", "dss", "promerge")
SINGLE_OBJECT = {"dinoseg", "dss"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        shutil.copy(EXAMPLES / "voc2007" / "JPEGImages" / name, folder / name)
    return folder


def check_regions(method: str, results: list[dict]) -> int:
    """Boxes pair with masks whose bounding box they are; returns the number of objects."""
    boxes = [r for r in results if r["type"] == "rectanglelabels"]
    masks = [r for r in results if r["type"] == "brushlabels"]
    assert len(boxes) == len(masks)
    if method in SINGLE_OBJECT:
        assert len(boxes) <= 1
    for box, mask in zip(boxes, masks, strict=True):
        assert 0.0 < box["score"] <= 1.0
        h, w = mask["original_height"], mask["original_width"]
        rows, cols = np.nonzero(brush_rle_decode(mask["value"]["rle"], (h, w)))
        assert cols.min() == pytest.approx(box["value"]["x"] * w / 100, abs=1)
        assert rows.min() == pytest.approx(box["value"]["y"] * h / 100, abs=1)
    return len(boxes)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_predict_runs_each_method_and_names_it(method, tiny_env, photos, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["predict", str(photos), "-m", method, "-o", str(out), "--shapes", "both"],
        env=tiny_env,
    )  # a box and a mask per object: the mask's box must be the box
    assert result.exit_code == 0, result.output
    assert f"{len(PHOTOS)} image(s) pre-labeled" in result.output
    tasks = json.loads((out / "tasks.json").read_text())
    assert len(tasks) == len(PHOTOS)
    found = 0
    for task in tasks:
        prediction = task["predictions"][0]
        assert prediction["model_version"].startswith(f"zerolabel-{method}-")
        found += check_regions(method, prediction["result"])
    assert found >= 1


def test_a_head_the_backbone_lacks_fails_each_image_naming_the_heads(tiny_env, photos, tmp_path):
    result = CliRunner().invoke(
        main,
        ["predict", str(photos / PHOTOS[0]), "-m", "dinoseg", "-p", "head=6", "-o", str(tmp_path)],
        env=tiny_env,
    )
    assert result.exit_code == 1
    assert "dinoseg head 6 does not exist: the backbone has 6 heads" in result.output
    assert "set the parameter head to 0..5" in result.output


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_env, photos):
    tmp = tmp_path_factory.mktemp("stack")
    with redis_server(tmp) as (redis_url, _), image_server(photos) as (images_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
            "ZEROLABEL_WAIT_TIMEOUT_S": "120",
        }
        worker = start_worker(env, tmp / "worker.log")
        try:
            wait_for_workers(redis_url, 1)
            client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
            yield client, images_url
        finally:
            stop(worker)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_a_project_selecting_the_method_is_served_through_the_queue(method, backend):
    client, images_url = backend
    project = f"{NEW_METHODS.index(method) + 10}.1700000000"
    setup = client.post(
        "/setup",
        json={
            "project": project,
            "schema": CONFIG,
            "extra_params": {"method": method, "shapes": "both"},  # a box and a mask each
        },
    )
    assert setup.status_code == 200, setup.data
    version = setup.get_json()["model_version"]
    assert version.startswith(f"zerolabel-{method}-")
    tasks = [{"id": i + 1, "data": {"image": f"{images_url}/{n}"}} for i, n in enumerate(PHOTOS)]
    reply = client.post(
        "/predict", json={"tasks": tasks, "project": project, "label_config": CONFIG}
    ).get_json()
    assert reply["model_version"] == version and len(reply["results"]) == len(PHOTOS)
    found = 0
    for entry in reply["results"]:
        assert "error" not in entry and entry["model_version"] == version
        found += check_regions(method, entry["result"])
    assert found >= 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"method": "dinoseg", "tau": 0.2}, "method 'dinoseg' has no parameter 'tau'"),
        pytest.param({"method": "dss", "head": 2}, "method 'dss' has no parameter 'head'"),
        pytest.param({"method": "promerge", "stride": 0}, "'stride' of method 'promerge' must be"),
        pytest.param({"method": "dinoseg", "mass": 0}, "'mass' of method 'dinoseg' must be"),
    ],
)
def test_setup_refuses_parameters_the_selected_method_does_not_take(options, message, tiny_env):
    client = create_app(PredictionService(BackendSettings.from_env(tiny_env))).test_client()
    setup = client.post("/setup", json={"project": "3", "schema": CONFIG, "extra_params": options})
    assert setup.status_code == 400 and message in setup.get_json()["error"]


def test_a_project_sets_the_methods_own_parameters(tiny_env):
    client = create_app(PredictionService(BackendSettings.from_env(tiny_env))).test_client()
    versions = {
        json.dumps(options): client.post(
            "/setup", json={"project": "4", "schema": CONFIG, "extra_params": options}
        ).get_json()["model_version"]
        for options in (
            {"method": "promerge"},
            {"method": "promerge", "tau": 0.3},
            {"method": "promerge", "params": {"stride": 8}},
            {"method": "dinoseg", "head": 0},
        )
    }
    assert len(set(versions.values())) == 4
