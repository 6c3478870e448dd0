"""Preset ``paper`` end to end on VOC photos (tiny random ViT): DSS on its authors' input (full
resolution cut to whole patches) from ``zerolabel predict`` and from a project's Extra params
through the queue, and ``zerolabel eval -m`` scoring methods on their authors' inputs."""

from __future__ import annotations

import json
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
VOC = EXAMPLES / "voc2007"
CONFIG = (EXAMPLES / "label_config.xml").read_text()
PHOTOS = ("000001.jpg", "000004.jpg")


def predict(
    photos: list[Path], out: Path, env: dict[str, str], *args: str
) -> tuple[list[dict], list[dict]]:
    """The COCO annotations and images ``zerolabel predict -m dss`` writes for ``photos``."""
    result = CliRunner().invoke(
        main, ["predict", *map(str, photos), "-o", str(out), "-m", "dss", *args], env=env
    )
    assert result.exit_code == 0, result.output
    coco = json.loads((out / "coco.json").read_text())
    return coco["annotations"], coco["images"]


def test_dss_paper_sees_the_photos_cut_to_whole_patches(tiny_env, tmp_path):
    photos = [VOC / "JPEGImages" / name for name in PHOTOS]
    paper, images = predict(photos, tmp_path / "paper", tiny_env, "--preset", "paper")
    assert paper, "random features still give an object per photo"
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    for annotation in paper:
        width, height = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        # Full resolution: whole patches of 16 px from the corner, never the remainder.
        assert x + w <= width // 16 * 16 and y + h <= height // 16 * 16
        assert x % 16 == 0 and y % 16 == 0 and (x + w) % 16 == 0 and (y + h) % 16 == 0
    # The photos are no whole number of patches: the remainder is there to be cut.
    assert all(w % 16 and h % 16 for w, h in sizes.values())


def test_the_paper_preset_is_written_as_its_own_model_version(tiny_env, tmp_path):
    photos = [VOC / "JPEGImages" / PHOTOS[0]]
    versions = []
    for preset in ("default", "paper"):
        out = tmp_path / preset
        predict(photos, out, tiny_env, "--preset", preset)
        [task] = json.loads((out / "tasks.json").read_text())
        versions.append(task["predictions"][0]["model_version"])
    assert versions[0] != versions[1]
    assert all(version.startswith("zerolabel-dss-") for version in versions)


def test_eval_scores_each_method_with_its_authors_input(tiny_env):
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--gt",
            str(VOC / "Annotations"),
            "--images",
            str(VOC / "JPEGImages"),
            "-m",
            "dss",
            "-m",
            "promerge",
            "--preset",
            "paper",
        ],
        env=tiny_env,
    )
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.output.strip().splitlines()[1:]]
    assert rows == ["dss", "promerge"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_env):
    """A backend and one worker on a real Redis, the VOC photos served over HTTP."""
    tmp = tmp_path_factory.mktemp("stack")
    with redis_server(tmp) as (redis_url, _), image_server(VOC / "JPEGImages") as (images, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_ALLOWED_HOSTS": images.removeprefix("http://"),
            "ZEROLABEL_WAIT_TIMEOUT_S": "120",
        }
        worker = start_worker(env, tmp / "worker.log")
        try:
            wait_for_workers(redis_url, 1)
            client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
            yield client, images
        finally:
            stop(worker)


def test_a_project_asks_for_the_authors_input_through_the_queue(backend):
    client, images = backend
    versions = {}
    for project, extra in (("31.1700000000", {}), ("32.1700000000", {"preset": "paper"})):
        setup = client.post(
            "/setup",
            json={
                "project": project,
                "schema": CONFIG,
                "extra_params": {"method": "dss", "shapes": "both", **extra},
            },
        )
        assert setup.status_code == 200, setup.data
        versions[project] = setup.get_json()["model_version"]
    assert len(set(versions.values())) == 2
    tasks = [{"id": i + 1, "data": {"image": f"{images}/{n}"}} for i, n in enumerate(PHOTOS)]
    reply = client.post(
        "/predict", json={"tasks": tasks, "project": "32.1700000000", "label_config": CONFIG}
    ).get_json()
    masks = [r for e in reply["results"] for r in e["result"] if r["type"] == "brushlabels"]
    assert masks and all(e["model_version"] == versions["32.1700000000"] for e in reply["results"])
    for mask in masks:
        h, w = mask["original_height"], mask["original_width"]
        rows, cols = np.nonzero(brush_rle_decode(mask["value"]["rle"], (h, w)))
        # The worker saw the photo cut to whole 16 px patches: the mask is made of them.
        assert rows.max() < h // 16 * 16 and cols.max() < w // 16 * 16
        assert rows.min() % 16 == 0 and (rows.max() + 1) % 16 == 0 and cols.min() % 16 == 0
