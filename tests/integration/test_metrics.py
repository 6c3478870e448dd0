"""Metrics of a real worker process (its metrics port) and of the backend, over real Redis."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

from tests.servers import (
    free_port,
    image_server,
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
MEASURED = ("fetch", "decode", "preprocess", "forward", "method")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _worker_metrics(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return _parse(reply.read().decode())


def test_worker_and_backend_metrics_count_the_jobs_run(tmp_path: Path, tiny_env: dict[str, str]):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(EXAMPLES / "voc2007" / "JPEGImages" / name, photos / name)
    port = free_port()
    with redis_server(tmp_path) as (redis_url, _), image_server(photos) as (images_url, _h):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
            "ZEROLABEL_WAIT_TIMEOUT_S": "60",
            "ZEROLABEL_METRICS_PORT": str(port),
        }
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            wait_for_workers(redis_url, 1)
            wait_for(lambda: bool(_worker_metrics(port)), 30, "worker metrics port")
            client = create_app(PredictionService(BackendSettings.from_env(env))).test_client()
            names = [*PHOTOS, "missing.jpg"]
            tasks = [
                {"id": i, "data": {"image": f"{images_url}/{name}"}}
                for i, name in enumerate(names, start=1)
            ]
            body = {"tasks": tasks, "project": "1", "label_config": CONFIG}
            reply = client.post("/predict", json=body)
            assert reply.status_code == 200
            results: list[dict[str, Any]] = reply.get_json()["results"]
            assert [("result" in r) for r in results] == [True, True, True, False]
            samples = _worker_metrics(port)
            backend = client.get("/metrics")
        finally:
            stop(worker)
    jobs = len(PHOTOS)
    assert _get(samples, "zerolabel_worker_images_total") == jobs
    assert _get(samples, "zerolabel_worker_batch_size_count") == jobs
    for stage in MEASURED:
        assert _get(samples, "zerolabel_worker_stage_seconds_count", stage=stage) == jobs, stage
        assert _get(samples, "zerolabel_worker_stage_seconds_sum", stage=stage) > 0, stage
    assert _get(samples, "zerolabel_worker_failures_total", cause="ImageLoadError") == 1
    assert _get(samples, "zerolabel_worker_cache_hits_total") == 0

    assert backend.status_code == 200
    answered = _parse(backend.get_data(as_text=True))
    assert _get(answered, "zerolabel_tasks_total", outcome="answered") == jobs
    assert _get(answered, "zerolabel_tasks_total", outcome="failed") == 1
    assert _get(answered, "zerolabel_queue_workers", queue="zerolabel") == 1
    assert _get(answered, "zerolabel_queue_depth", queue="zerolabel") == 0
