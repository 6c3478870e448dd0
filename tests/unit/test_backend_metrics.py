"""The backend's /metrics: Prometheus text, requests and tasks counted, the queue read at scrape
time, and several processes summed through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from zerolabel.contract import Box, Region
from zerolabel.errors import ConfigError
from zerolabel.io.images import LoadedImage
from zerolabel.queue import jobs
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.queue.service import PredictionService
from zerolabel.queue.worker import run_worker
from zerolabel.settings import BackendSettings
from zerolabel_backend.app import create_app

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "examples" / "label_config.xml").read_text()


class BoxRunner:
    """Stands in for a model: one region covering each image."""

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        return [[Region(Box(0, 0, *i.original_hw[::-1]), 1.0, "lost")] for i in images]


def _settings(root: Path, **env: str) -> BackendSettings:
    return BackendSettings.from_env(
        {"ZEROLABEL_WAIT_TIMEOUT_S": "0", "ZEROLABEL_LOCAL_ROOTS": str(root), **env}
    )


def _scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), parsed as Prometheus parses it."""
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.get_data(as_text=True))
        for sample in family.samples
    }


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(3):
        pixels = np.full((6, 8, 3), 60 * index, dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
        paths.append(tmp_path / f"{index}.png")
    return paths


def _predict(client: Any, path: Path | None) -> tuple[Any, str | None]:
    """The task's entry in ``results`` and, when it has no prediction, the skipped reason."""
    data = {"image": str(path)} if path is not None else {}
    body = {"tasks": [{"id": 1, "data": data}], "project": "2", "label_config": CONFIG}
    reply = client.post("/predict", json=body)
    assert reply.status_code == 200
    answer = reply.get_json()
    [entry] = answer["results"]
    return entry, answer["skipped"][0]["reason"] if answer["skipped"] else None


def _run_jobs(redis: Any, settings: BackendSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every queued job in this process, as a worker would."""
    runtime = WorkerRuntime(settings.discovery, redis)
    runtime.runner = lambda spec: BoxRunner()  # type: ignore[method-assign]
    monkeypatch.setattr(jobs, "get_runtime", lambda: runtime)
    run_worker(redis, settings.discovery.queue, burst=True, with_scheduler=False)


def test_requests_tasks_and_queue_depth_follow_the_predict_calls(photos, monkeypatch):
    redis = fakeredis.FakeRedis()
    settings = _settings(photos[0].parent)
    client = create_app(PredictionService(settings, redis=redis), settings).test_client()
    for path in photos:
        entry, reason = _predict(client, path)
        assert entry == [] and reason is not None and reason.startswith("late")
    queued = _scrape(client)
    assert _get(queued, "zerolabel_queue_up") == 1
    assert _get(queued, "zerolabel_queue_depth", queue="zerolabel") == len(photos)
    assert _get(queued, "zerolabel_queue_workers", queue="zerolabel") == 0
    assert _get(queued, "zerolabel_tasks_total", outcome="late") == len(photos)

    _run_jobs(redis, settings, monkeypatch)
    for path in photos:
        assert _predict(client, path)[0]["result"]
    entry, reason = _predict(client, None)  # no image URL: a failed task
    assert entry == [] and reason is not None and not reason.startswith("late")
    samples = _scrape(client)
    predicts = 2 * len(photos) + 1
    assert _get(samples, "zerolabel_queue_depth", queue="zerolabel") == 0
    assert _get(samples, "zerolabel_tasks_total", outcome="answered") == len(photos)
    assert _get(samples, "zerolabel_tasks_total", outcome="late") == len(photos)
    assert _get(samples, "zerolabel_tasks_total", outcome="failed") == 1
    ok = {"route": "/predict", "method": "POST", "status": "200"}
    assert _get(samples, "zerolabel_http_requests_total", **ok) == predicts
    latency = {"route": "/predict"}
    count = _get(samples, "zerolabel_http_request_duration_seconds_count", **latency)
    below_inf = _get(
        samples, "zerolabel_http_request_duration_seconds_bucket", le="+Inf", **latency
    )
    assert count == below_inf == predicts
    # the first scrape was itself a request, answered before the second began
    scraped = {"route": "/metrics", "method": "GET", "status": "200"}
    assert _get(samples, "zerolabel_http_requests_total", **scraped) == 1


def test_refused_and_unknown_requests_are_counted_by_route_pattern(tmp_path):
    settings = _settings(tmp_path)
    client = create_app(PredictionService(settings, redis=fakeredis.FakeRedis())).test_client()
    assert client.post("/predict", data=b"not json").status_code == 400
    for path in ("/no/such/page", "/another?x=1"):
        assert client.get(path).status_code == 404
    assert client.delete("/predict").status_code == 405
    samples = _scrape(client)
    bad = {"route": "/predict", "method": "POST", "status": "400"}
    assert _get(samples, "zerolabel_http_requests_total", **bad) == 1
    unknown = {"route": "other", "method": "GET", "status": "404"}
    assert _get(samples, "zerolabel_http_requests_total", **unknown) == 2
    wrong_method = {"route": "other", "method": "DELETE", "status": "405"}
    assert _get(samples, "zerolabel_http_requests_total", **wrong_method) == 1
    assert not [key for key in samples if ("route", "/no/such/page") in key[1]]


def test_an_unreachable_redis_reads_as_queue_down(tmp_path):
    settings = _settings(tmp_path)
    server = fakeredis.FakeServer()
    server.connected = False
    redis = fakeredis.FakeRedis(server=server)
    client = create_app(PredictionService(settings, redis=redis), settings).test_client()
    samples = _scrape(client)
    assert _get(samples, "zerolabel_queue_up") == 0
    assert not [key for key in samples if key[0] == "zerolabel_queue_depth"]


def test_metrics_need_the_basic_auth_like_every_other_route(tmp_path):
    settings = _settings(tmp_path, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw")
    client = create_app(PredictionService(settings, redis=fakeredis.FakeRedis())).test_client()
    assert client.get("/metrics").status_code == 401
    refused = _scrape_with(client, ("ls", "pw"))
    denied = {"route": "/metrics", "method": "GET", "status": "401"}
    assert _get(refused, "zerolabel_http_requests_total", **denied) == 1


def _scrape_with(client: Any, credentials: tuple[str, str]) -> dict[Any, float]:
    import base64

    token = base64.b64encode(":".join(credentials).encode()).decode()
    reply = client.get("/metrics", headers={"Authorization": f"Basic {token}"})
    assert reply.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.get_data(as_text=True))
        for s in family.samples
    }


_PROCESS = textwrap.dedent(
    """
    import sys
    import fakeredis
    from zerolabel import metrics
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings
    from zerolabel_backend.app import create_app

    settings = BackendSettings.from_env()
    app = create_app(PredictionService(settings, redis=fakeredis.FakeRedis()), settings)
    client = app.test_client()
    for _ in range(int(sys.argv[1])):
        assert client.get("/health").status_code == 200
    metrics.observe_writeback()
    """
)


def test_processes_sharing_a_multiprocess_dir_are_summed(tmp_path):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "PYTHONPATH": _pythonpath()}
    for health_calls in (2, 3):
        done = subprocess.run(
            [sys.executable, "-c", _PROCESS, str(health_calls)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    settings = _settings(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    client = create_app(PredictionService(settings, redis=fakeredis.FakeRedis())).test_client()
    samples = _scrape(client)
    health = {"route": "/health", "method": "GET", "status": "200"}
    assert _get(samples, "zerolabel_http_requests_total", **health) == 5
    assert _get(samples, "zerolabel_http_request_duration_seconds_count", route="/health") == 5
    assert _get(samples, "zerolabel_writebacks_total", outcome="written") == 2
    assert _get(samples, "zerolabel_queue_up") == 1  # read by the scraping process itself


def _pythonpath() -> str:
    return ":".join(str(ROOT / part) for part in ("worker", "backend", "."))


@pytest.mark.parametrize("value", ["", "missing"])
def test_a_multiprocess_dir_that_is_not_a_folder_fails_at_start(tmp_path, value):
    folder = str(tmp_path / value) if value else ""
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR=.*is not a folder"):
        BackendSettings.from_env({"PROMETHEUS_MULTIPROC_DIR": folder})


def test_the_prometheus_example_scrapes_the_ports_compose_gives_backend_and_workers():
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    jobs_by_name = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs_by_name["zerolabel-backend"]["static_configs"][0]["targets"] == ["backend:9090"]
    (workers,) = jobs_by_name["zerolabel-workers"]["dns_sd_configs"]
    compose = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
    for name in workers["names"]:
        assert compose["services"][name]["expose"] == [str(workers["port"])]
    assert compose["x-worker-metrics"]["ZEROLABEL_METRICS_PORT"] == str(workers["port"])
