"""Backend -> real redis-server -> real worker processes (tiny random ViT) -> Label Studio JSON."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from zerolabel.contract import DiscoveryRequest
from zerolabel.labelstudio.brush import brush_rle_decode
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.servers import (
    image_server,
    redis_contents,
    redis_server,
    start_worker,
    stop,
    wait_for,
    wait_for_workers,
)

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = (EXAMPLES / "label_config.xml").read_text()
PHOTOS = ("000001.jpg", "000004.jpg", "000032.jpg")


@dataclass
class Stack:
    redis_url: str
    images_url: str
    hits: dict[str, int]
    delays: dict[str, float]
    env: dict[str, str]
    log: Path
    workers: list
    client: object

    def predict(self, names, ids=None, project="1.1700000000"):
        tasks = [
            {"id": ids[i] if ids else i + 1, "data": {"image": f"{self.images_url}/{n}"}}
            for i, n in enumerate(names)
        ]
        response = self.client.post(
            "/predict",
            json={"tasks": tasks, "project": project, "label_config": CONFIG, "params": {}},
        )
        assert response.status_code == 200, response.data
        return response.get_json()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_env):
    tmp = tmp_path_factory.mktemp("stack")
    photos = tmp / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(EXAMPLES / "voc2007" / "JPEGImages" / name, photos / name)
    shutil.copy(photos / PHOTOS[0], photos / "same-content.jpg")
    with redis_server(tmp) as (redis_url, _), image_server(photos) as (images_url, handler):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
            "ZEROLABEL_LEASE_S": "2",
            "ZEROLABEL_WAIT_TIMEOUT_S": "60",
        }
        log = tmp / "workers.log"
        workers = [start_worker(env, log)]
        wait_for_workers(redis_url, 1)
        client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
        setup = client.post(
            "/setup",
            json={"project": "1.1700000000", "schema": CONFIG, "hostname": "", "access_token": ""},
        )
        assert setup.status_code == 200
        yield Stack(redis_url, images_url, handler.hits, handler.delays, env, log, workers, client)
        for worker in workers:
            stop(worker)


def _version(stack) -> str:
    return stack.client.post("/setup", json={"project": "1", "schema": CONFIG}).get_json()[
        "model_version"
    ]


def test_predict_through_the_queue_returns_boxes_and_masks(stack):
    reply = stack.predict(PHOTOS)
    version = _version(stack)
    assert reply["model_version"] == version and len(reply["results"]) == len(PHOTOS)
    for entry in reply["results"]:
        assert entry["model_version"] == version and entry["result"]
        boxes = [r for r in entry["result"] if r["type"] == "rectanglelabels"]
        masks = [r for r in entry["result"] if r["type"] == "brushlabels"]
        # One region per object (shapes "auto"): LOST's mask is cut on the patch grid, so the
        # object is sent as its box.
        assert len(boxes) >= 1 and not masks
        for box in boxes:
            assert 0.0 < box["score"] <= 1.0
    both = "2.1700000000"  # a project that asks for a box and a mask per object
    setup = {"project": both, "schema": CONFIG, "extra_params": {"shapes": "both"}}
    assert stack.client.post("/setup", json=setup).status_code == 200
    for entry in stack.predict(PHOTOS, project=both)["results"]:
        boxes = [r for r in entry["result"] if r["type"] == "rectanglelabels"]
        masks = [r for r in entry["result"] if r["type"] == "brushlabels"]
        assert len(boxes) == len(masks) >= 1
        for box, mask in zip(boxes, masks, strict=True):
            h, w = mask["original_height"], mask["original_width"]
            pixels = brush_rle_decode(mask["value"]["rle"], (h, w))
            rows, cols = np.nonzero(pixels)
            v = box["value"]  # the mask's bounding box is the region's box (percent)
            assert cols.min() == pytest.approx(v["x"] * w / 100, abs=1)
            assert rows.max() + 1 == pytest.approx((v["y"] + v["height"]) * h / 100, abs=1)


def test_asking_again_is_served_from_the_stored_result(stack):
    first = stack.predict(PHOTOS[:1])
    request_job = _job_for(stack, PHOTOS[0])
    ended, hits = request_job.ended_at, stack.hits[f"/{PHOTOS[0]}"]
    again = stack.predict(PHOTOS[:1])
    assert again == first
    assert _job_for(stack, PHOTOS[0]).ended_at == ended  # no second run
    assert stack.hits[f"/{PHOTOS[0]}"] == hits  # not even fetched again


def test_same_image_content_under_another_url_is_not_computed_twice(stack):
    original = stack.predict(PHOTOS[:1])["results"][0]
    copy = stack.predict(["same-content.jpg"], ids=[99])["results"][0]
    assert copy == original
    wait_for(lambda: "served from the result cache" in stack.log.read_text(), 5, "cache log")


def test_a_worker_killed_mid_job_does_not_lose_the_task(stack):
    slow = PHOTOS[2]
    stack.delays[f"/{slow}"] = 6.0  # the first download stalls: the job is mid-run
    settings = BackendSettings.from_env({**stack.env, "ZEROLABEL_WAIT_TIMEOUT_S": "1"})
    impatient = create_app(PredictionService(settings)).test_client()
    tasks = [{"id": 7, "data": {"image": f"{stack.images_url}/{slow}"}}]
    body = {"tasks": tasks, "project": "2", "label_config": CONFIG}
    _flush_job(stack, slow)
    reply = impatient.post("/predict", json=body).get_json()
    assert reply["results"] == [[]]  # LS stores nothing (no /setup hostname: nothing written)
    assert "late" in reply["skipped"][0]["reason"] and reply["skipped"][0]["pending"] is False
    wait_for(lambda: _job_for(stack, slow).get_status() == "started", 10, "job start")
    victim = stack.workers.pop(0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    stack.workers.append(start_worker(stack.env, stack.log))
    wait_for_workers(stack.redis_url, 1)
    time.sleep(2.5)  # the dead worker's lease (2 s) runs out
    recovered = stack.predict([slow], ids=[7])["results"][0]
    assert recovered["result"] and recovered["model_version"] == _version(stack)


def _job_for(stack, name) -> Job:
    """The job the backend submits for this image in a project with the example config."""
    service = PredictionService(BackendSettings.from_env(stack.env))
    _, spec = service.plan(CONFIG, ProjectOptions())
    job_id = DiscoveryRequest(spec, f"{stack.images_url}/{name}").job_id
    return Job.fetch(job_id, connection=Redis.from_url(stack.redis_url), serializer=JSONSerializer)


def _flush_job(stack, name) -> None:
    try:
        _job_for(stack, name).delete()
    except Exception:  # noqa: BLE001 (no such job yet)
        pass
    Redis.from_url(stack.redis_url).delete(
        *Redis.from_url(stack.redis_url).keys("zerolabel:result:*") or ["-"]
    )


def test_with_redis_down_predict_answers_in_time_and_health_says_so(tmp_path, dino_checkpoint):
    with redis_server(tmp_path) as (redis_url, process):
        env = {
            "REDIS_URL": redis_url,
            "ZEROLABEL_CHECKPOINT": str(dino_checkpoint),
            "ZEROLABEL_WAIT_TIMEOUT_S": "3",
        }
        client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
        assert client.get("/health").get_json()["queue"]["reachable"] is True
        stop(process)
        start = time.perf_counter()
        tasks = [{"id": i, "data": {"image": f"/data/upload/1/{i}.jpg"}} for i in range(3)]
        reply = client.post("/predict", json={"tasks": tasks, "label_config": CONFIG})
        assert time.perf_counter() - start < 3 + 5  # its own timeout, not the worker's
        results, skipped = reply.get_json()["results"], reply.get_json()["skipped"]
        assert results == [[], [], []] and len(skipped) == 3
        assert all("Redis unreachable" in s["reason"] for s in skipped)
        health = client.get("/health").get_json()
        assert health["status"] == "DEGRADED" and health["queue"]["reachable"] is False


def test_an_image_that_cannot_be_read_is_reported_and_tried_again_next_time(stack):
    first = stack.predict(["missing.jpg"], ids=[41])
    assert first["results"] == [[]] and "404" in first["skipped"][0]["reason"]
    assert stack.hits["/missing.jpg"] == 1
    again = stack.predict(["missing.jpg"], ids=[41])
    assert "404" in again["skipped"][0]["reason"] and stack.hits["/missing.jpg"] == 2  # not stale


WORKER_KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233"  # the workers' LABEL_STUDIO_API_KEY
SETUP_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2V0dXAtb25seQ"


class _LabelStudioImages(BaseHTTPRequestHandler):
    """Serves example photos at /data/upload/1/<name>, only with the workers' key."""

    seen: list[tuple[str, str | None]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        auth = self.headers.get("Authorization")
        self.seen.append((self.path, auth))
        name = self.path.removeprefix("/data/upload/1/")
        path = EXAMPLES / "voc2007" / "JPEGImages" / name
        if auth != f"Token {WORKER_KEY}":
            status, body = 401, b'{"detail": "Authentication credentials were not provided."}'
        elif name in PHOTOS and path.is_file():
            status, body = 200, path.read_bytes()
        else:
            status, body = 404, b"not found"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_no_token_is_ever_stored_in_redis(tmp_path, tiny_env):
    """Setup with a token, jobs through a real redis-server and worker: no key or value holds it."""
    _LabelStudioImages.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LabelStudioImages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ls_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with redis_server(tmp_path) as (redis_url, _):
            env = {
                "REDIS_URL": redis_url,
                **tiny_env,
                "LABEL_STUDIO_URL": ls_url,
                "LABEL_STUDIO_API_KEY": WORKER_KEY,
                "ZEROLABEL_WAIT_TIMEOUT_S": "60",
            }
            log = tmp_path / "worker.log"
            worker = start_worker(env, log)
            try:
                wait_for_workers(redis_url, 1)
                service = PredictionService(BackendSettings.from_env(env))
                client = create_app(service).test_client()
                setup = {"project": "4.1", "schema": CONFIG, "hostname": ls_url}
                reply = client.post("/setup", json=setup | {"access_token": SETUP_TOKEN})
                assert reply.status_code == 200
                tasks = [
                    {"id": i, "data": {"image": f"/data/upload/1/{name}"}}
                    for i, name in enumerate([*PHOTOS[:2], "missing.jpg"], start=1)
                ]
                body = {"tasks": tasks, "project": "4.1", "label_config": CONFIG}
                reply = client.post("/predict", json=body).get_json()
                assert [bool(r) for r in reply["results"]] == [True, True, False]
                assert [r["result"] != [] for r in reply["results"][:2]] == [True, True]
                assert "404" in reply["skipped"][0]["reason"] and reply["skipped"][0]["index"] == 2
                values = redis_contents(Redis.from_url(redis_url))
                assert any(b"zerolabel:result:" in v for v in values)  # results are stored
                assert any(b"/data/upload/1/" in v for v in values)  # job payloads were read
                for secret in (WORKER_KEY, SETUP_TOKEN):
                    assert not [v for v in values if secret.encode() in v], secret
            finally:
                stop(worker)
            assert WORKER_KEY not in log.read_text() and SETUP_TOKEN not in log.read_text()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert {auth for _, auth in _LabelStudioImages.seen} == {f"Token {WORKER_KEY}"}
