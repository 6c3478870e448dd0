"""One worker process serves two projects at once through the backend service: one on a tiny
ViT method, one on a tiny trained detector of the models folder, chosen by Extra params alone.

A real redis-server, the backend app (in process) and one ``zerolabel worker`` whose settings
name no detector: it loads each detector a job names from ``ZEROLABEL_MODELS_DIR`` on first use
and keeps one (``ZEROLABEL_WORKER_MODELS=1``), so switching a project to a second detector, and
back, happens without a restart.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Worker
from rq.registry import FailedJobRegistry
from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.loop.use_model import install_detector
from zerolabel.queue.dispatch import Dispatcher
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.integration.cad_data import tiny_config, write_tiny_coco
from tests.servers import image_server, redis_server, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = (EXAMPLES / "label_config.xml").read_text()
PHOTOS = ("000003.jpg", "000005.jpg", "000032.jpg")
LATER = ("000007.jpg",)  # a photo no model has seen: its job runs (no result cached)
VIT = {"method": "tokencut"}
ANY_SCORE = {"score_threshold": 0.0}  # a detector trained for a step or two is unsure of all


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> tuple[Path, list[str]]:
    """The models folder holding two tiny detectors: after one training step, and after two."""
    from zerolabel.cad import train

    root = tmp_path_factory.mktemp("detectors")
    data = write_tiny_coco(root)
    models = root / "models"
    names = []
    for steps in (1, 2):  # the second run resumes the first: another detector
        config = tiny_config(False, iterations=steps, checkpoint_every=1)
        checkpoint = train(config, data / "coco.json", data, root / "run", progress=False)
        names.append(install_detector(checkpoint, models))
    assert len(set(names)) == 2
    return models, names


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_env, detectors):
    models, _ = detectors
    tmp = tmp_path_factory.mktemp("stack")
    photos = tmp / "photos"
    photos.mkdir()
    for name in PHOTOS + LATER:
        shutil.copy(EXAMPLES / "voc2007" / "JPEGImages" / name, photos / name)
    with redis_server(tmp) as (redis_url, _), image_server(photos) as (images_url, _):
        env = {
            **tiny_env,
            "REDIS_URL": redis_url,
            "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
            "ZEROLABEL_WAIT_TIMEOUT_S": "300",
            "ZEROLABEL_MODELS_DIR": str(models),
            "ZEROLABEL_WORKER_MODELS": "1",
        }
        worker = start_worker(env, tmp / "worker.log")
        try:
            wait_for_workers(redis_url, 1, timeout_s=120)
            service = PredictionService(BackendSettings.from_env(env))
            yield create_app(service), images_url, redis_url, service, tmp / "worker.log"
        finally:
            stop(worker)


def _setup(app: Any, project: str, extra: dict[str, Any]) -> Any:
    body = {"project": project, "schema": CONFIG, "extra_params": extra}
    return app.test_client().post("/setup", json=body)


def _predict(
    app: Any, project: str, images_url: str, photos: tuple[str, ...] = PHOTOS
) -> dict[str, Any]:
    tasks = [{"id": i + 1, "data": {"image": f"{images_url}/{n}"}} for i, n in enumerate(photos)]
    body = {"tasks": tasks, "project": project, "label_config": CONFIG}
    reply = app.test_client().post("/predict", json=body)
    assert reply.status_code == 200, reply.data
    return dict(reply.get_json())


def _check(reply: dict[str, Any], version: str, photos: tuple[str, ...] = PHOTOS) -> None:
    """One prediction per task, of this version, with boxes inside the image."""
    assert reply["model_version"] == version and reply["skipped"] == []
    assert len(reply["results"]) == len(photos)
    for entry in reply["results"]:
        assert entry["model_version"] == version
        for item in (i for i in entry["result"] if i["type"] == "rectanglelabels"):
            value = item["value"]
            assert 0 <= value["x"] <= 100 and 0 <= value["y"] <= 100
            assert value["x"] + value["width"] <= 100.01 and value["y"] + value["height"] <= 100.01


def test_one_worker_serves_a_vit_project_and_a_detector_project_at_once(stack, detectors):
    app, images_url, redis_url, _, log = stack
    _, (first, second) = detectors
    vit = _setup(app, "21.1700000000", VIT).get_json()["model_version"]
    cad_extra = {"method": "cad", "detector": first, **ANY_SCORE}
    cad = _setup(app, "22.1700000000", cad_extra).get_json()["model_version"]
    assert vit.startswith("zerolabel-tokencut-") and cad.startswith("zerolabel-cad-cad-")

    with ThreadPoolExecutor(2) as pool:  # both projects' jobs wait in the queue together
        asked = [pool.submit(_predict, app, p, images_url) for p in ("21.1", "22.1")]
        vit_reply, cad_reply = (future.result() for future in asked)
    _check(vit_reply, vit)
    _check(cad_reply, cad)
    assert len(Worker.all(connection=Redis.from_url(redis_url))) == 1

    # The project moves to the second detector, then back: same worker, no restart. One
    # detector is kept (ZEROLABEL_WORKER_MODELS=1), so the first is read again for a new photo.
    second_extra = {**cad_extra, "detector": second}
    moved = _setup(app, "22.1700000000", second_extra).get_json()["model_version"]
    assert moved not in (cad, vit)
    _check(_predict(app, "22.1", images_url), moved)
    assert _setup(app, "22.1700000000", cad_extra).get_json()["model_version"] == cad
    assert _predict(app, "22.1", images_url) == cad_reply  # its results, kept by version
    _check(_predict(app, "22.1", images_url, LATER), cad, LATER)
    _check(_predict(app, "21.1", images_url, LATER), vit, LATER)
    loaded = [line for line in log.read_text().splitlines() if "loading detector" in line]
    assert [line.rsplit("/", 1)[-1] for line in loaded] == [first, second, first]


def test_setup_refuses_a_detector_the_folder_lacks_and_a_worker_answers_such_a_job(
    stack, detectors
):
    app, images_url, redis_url, service, _ = stack
    models, _ = detectors
    refused = _setup(app, "23.1700000000", {"method": "cad", "detector": "cad-ffffffffff.pt"})
    assert refused.status_code == 400
    assert f"is not in ZEROLABEL_MODELS_DIR ({models}), which holds" in refused.get_json()["error"]

    # A job that names a file the workers lack (a backend with another folder): answered with
    # an error naming the folder. The job finished (a result comes only from a finished job),
    # so RQ does not retry it.
    spec = DiscoverySpec(method="cad", backbone="cad", weights="cad-ffffffffff.pt")
    dispatcher: Dispatcher = service.dispatcher
    job = dispatcher.submit(DiscoveryRequest(spec, f"{images_url}/{PHOTOS[0]}", 9))
    (outcome,) = dispatcher.collect([job], timeout_s=120)
    assert outcome.result is not None and outcome.result.regions == []
    assert outcome.result.error and f"ZEROLABEL_MODELS_DIR ({models})" in outcome.result.error
    assert FailedJobRegistry(queue=dispatcher.queue).count == 0
