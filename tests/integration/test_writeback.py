"""Late tasks through a real redis-server and worker process: one prediction each in a fake LS."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis
from zerolabel.queue.service import PENDING, WRITTEN, PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.ls_fake import fake_label_studios
from tests.servers import redis_contents, redis_server, start_worker, stop, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = (EXAMPLES / "label_config.xml").read_text()
PHOTOS = ("000001.jpg", "000004.jpg")
KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233"  # the workers' LABEL_STUDIO_API_KEY


def test_late_tasks_get_exactly_one_prediction_each_without_asking_again(tmp_path, tiny_env):
    with fake_label_studios(KEY) as start, redis_server(tmp_path) as (redis_url, _):
        ls = start()
        ls.project = 5  # the project /setup and /predict name ("5.1")
        for name in PHOTOS:
            ls.images[f"/data/upload/1/{name}"] = (
                EXAMPLES / "voc2007" / "JPEGImages" / name
            ).read_bytes()
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": KEY,
            "ZEROLABEL_WAIT_TIMEOUT_S": "0.2",
        }
        client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
        setup = {"project": "5.1", "schema": CONFIG, "hostname": ls.url, "access_token": "x"}
        version = client.post("/setup", json=setup).get_json()["model_version"]
        images = [PHOTOS[0], PHOTOS[1], PHOTOS[0]]  # tasks 1 and 3 share one job
        tasks = [
            {"id": i, "data": {"image": f"/data/upload/1/{name}"}}
            for i, name in enumerate(images, start=1)
        ]
        ls.tasks.update({task["id"]: task["data"] for task in tasks})
        body = {"tasks": tasks, "project": "5.1", "label_config": CONFIG}
        reply = client.post("/predict", json=body).get_json()  # no worker yet: every task late
        assert reply["results"] == [[], [], []]
        assert [(s["task"], s["reason"]) for s in reply["skipped"]] == [
            (1, PENDING),
            (2, PENDING),
            (3, PENDING),
        ]
        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            redis = Redis.from_url(redis_url)
            wait_for(lambda: ls.per_task() == {1: 1, 2: 1, 3: 1}, 120, "written predictions")
            wait_for(lambda: not redis.keys("zerolabel:waiting:*"), 30, "deliveries")
            again = client.post("/predict", json=body).get_json()  # the user clicks again
            assert again["results"] == [[], [], []]
            assert {s["reason"] for s in again["skipped"]} == {WRITTEN}
            values = redis_contents(redis)
        finally:
            stop(worker)
        assert ls.per_task() == {1: 1, 2: 1, 3: 1}
        assert sum(1 for method, _, _ in ls.seen if method == "POST") == 3
        for prediction in ls.predictions:
            assert prediction["model_version"] == version and prediction["result"]
            kinds = {item["type"] for item in prediction["result"]}
            assert kinds == {"rectanglelabels"}  # one region per object: LOST's box
        assert {auth for _, _, auth in ls.seen} == {f"Token {KEY}"}
        assert not [v for v in values if KEY.encode() in v]
        assert KEY not in log.read_text()
