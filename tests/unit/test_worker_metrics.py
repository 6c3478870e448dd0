"""Worker metrics: images, stage times per image, failures by cause, cache hits, the HTTP port."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import fakeredis
import numpy as np
import pytest
from PIL import Image
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from zerolabel import metrics
from zerolabel.contract import Box, DiscoveryRequest, DiscoverySpec, Region
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.io.images import LoadedImage
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings
from zerolabel.stages import Timings

from tests.servers import free_port


@dataclass
class RefinedTimings(Timings):
    """Timings of a method with one more stage."""

    refinement_s: float = 0.0


class TimedRunner:
    """Stands in for a model: one box per image, and fixed seconds per stage and image."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.timings = RefinedTimings()
        self.failure = failure

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        if self.failure is not None:
            raise self.failure
        n = len(images)
        self.timings.preprocess_s += 0.25 * n
        self.timings.forward_s += 0.5 * n
        self.timings.method_s += 1.0 * n
        self.timings.refinement_s += 2.0 * n
        self.timings.images += n
        return [[Region(Box(0, 0, 4, 4), 1.0, "lost")] for _ in images]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _stage(stage: str) -> tuple[float, float]:
    """(count, sum) of a stage's histogram in the default registry."""
    return (
        _value("zerolabel_worker_stage_seconds_count", stage=stage),
        _value("zerolabel_worker_stage_seconds_sum", stage=stage),
    )


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for index in range(3):
        pixels = np.full((8, 10, 3), 40 * index, dtype=np.uint8)
        pixels[2:5, 3:7] = 255
        Image.fromarray(pixels).save(tmp_path / f"{index}.png")
    return tmp_path


def _runtime(root: Path, runner: TimedRunner, redis: object | None = None) -> WorkerRuntime:
    worker = WorkerRuntime(WorkerSettings(local_roots=(str(root),)), redis)  # type: ignore[arg-type]
    worker.runner = lambda spec: runner  # type: ignore[method-assign]
    return worker


def _request(path: Path) -> DiscoveryRequest:
    return DiscoveryRequest(DiscoverySpec(), str(path), 1)


def test_a_run_counts_its_images_batch_and_each_stage_once_per_image():
    registry = CollectorRegistry()
    recorded = metrics.Metrics(registry)
    after = RefinedTimings(preprocess_s=0.3, forward_s=0.6, method_s=0.9, refinement_s=1.5)
    recorded.observe_run(RefinedTimings(), after, images=3)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("zerolabel_worker_images_total") == 3
    assert sample("zerolabel_worker_batch_size_count") == 1
    assert sample("zerolabel_worker_batch_size_sum") == 3
    for stage, total in [("preprocess", 0.3), ("forward", 0.6), ("method", 0.9)]:
        assert sample("zerolabel_worker_stage_seconds_count", stage=stage) == 3
        assert sample("zerolabel_worker_stage_seconds_sum", stage=stage) == pytest.approx(total)
    # the batch's 1.5 s shared by its three images: each lands in the 0.5 s bucket
    assert sample("zerolabel_worker_stage_seconds_bucket", stage="refinement", le="0.25") == 0
    assert sample("zerolabel_worker_stage_seconds_bucket", stage="refinement", le="0.5") == 3
    assert sample("zerolabel_worker_stage_seconds_count", stage="fetch") == 0  # exists at zero


def test_discover_records_fetch_decode_and_the_runner_stages_per_image(images):
    worker = _runtime(images, TimedRunner())
    before_images = _value("zerolabel_worker_images_total")
    before = {s: _stage(s) for s in ("fetch", "decode", "forward", "method", "refinement")}
    for index in range(3):
        assert not worker.discover(_request(images / f"{index}.png")).error
    assert _value("zerolabel_worker_images_total") - before_images == 3
    for stage in ("fetch", "decode"):
        assert _stage(stage)[0] - before[stage][0] == 3
    for stage, seconds in [("forward", 0.5), ("method", 1.0), ("refinement", 2.0)]:
        count, total = _stage(stage)
        assert count - before[stage][0] == 3
        assert total - before[stage][1] == pytest.approx(3 * seconds)


@pytest.mark.parametrize(
    ("failure", "cause", "raises"),
    [
        pytest.param(WeightsError("other weights"), "WeightsError", False, id="weights"),
        pytest.param(RuntimeError("CUDA out of memory"), "RuntimeError", True, id="bug"),
    ],
)
def test_a_failed_run_counts_its_cause_and_no_image(images, failure, cause, raises):
    worker = _runtime(images, TimedRunner(failure))
    counted = _value("zerolabel_worker_failures_total", cause=cause)
    done = _value("zerolabel_worker_images_total")
    forward = _stage("forward")[0]
    if raises:
        with pytest.raises(RuntimeError):
            worker.discover(_request(images / "0.png"))
    else:
        assert worker.discover(_request(images / "0.png")).error
    assert _value("zerolabel_worker_failures_total", cause=cause) - counted == 1
    assert _value("zerolabel_worker_images_total") == done
    assert _stage("forward")[0] == forward


def test_an_image_that_cannot_be_loaded_counts_as_an_image_load_failure(images):
    worker = _runtime(images, TimedRunner())
    counted = _value("zerolabel_worker_failures_total", cause="ImageLoadError")
    fetched = _stage("fetch")[0]
    assert "cannot read file" in (worker.discover(_request(images / "missing.png")).error or "")
    assert _value("zerolabel_worker_failures_total", cause="ImageLoadError") - counted == 1
    assert _stage("fetch")[0] == fetched  # a failed stage is not timed


def test_a_cached_result_is_a_cache_hit_and_runs_nothing(images):
    worker = _runtime(images, TimedRunner(), fakeredis.FakeRedis())
    hits, done = (
        _value("zerolabel_worker_cache_hits_total"),
        _value("zerolabel_worker_images_total"),
    )
    first = worker.discover(_request(images / "1.png"))
    again = worker.discover(_request(images / "1.png"))
    assert again.regions == first.regions
    assert _value("zerolabel_worker_cache_hits_total") - hits == 1
    assert _value("zerolabel_worker_images_total") - done == 1


def test_write_backs_count_by_outcome_and_an_unknown_outcome_is_refused():
    written = _value("zerolabel_writebacks_total", outcome="written")
    metrics.observe_writeback()
    metrics.observe_writeback("written")
    assert _value("zerolabel_writebacks_total", outcome="written") - written == 2
    with pytest.raises(ValueError, match="'lost'"):
        metrics.observe_writeback("lost")


def test_batches_observed_directly_land_in_the_batch_histogram():
    count, total = (
        _value("zerolabel_worker_batch_size_count"),
        _value("zerolabel_worker_batch_size_sum"),
    )
    metrics.observe_batch(5)
    assert _value("zerolabel_worker_batch_size_count") - count == 1
    assert _value("zerolabel_worker_batch_size_sum") - total == 5


def test_gpu_memory_is_absent_while_cuda_is_unused():
    assert list(metrics.GpuMemoryCollector().collect()) == []


@pytest.fixture
def served() -> Iterator[int]:
    port = free_port()
    server = metrics.serve("127.0.0.1", port)
    assert server is not None
    yield port
    server.shutdown()
    server.server_close()


def test_the_metrics_port_serves_parseable_worker_metrics(served):
    metrics.observe_batch(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{served}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["zerolabel_worker_batch_size"].type == "histogram"
    stages = {
        s.labels["stage"]
        for s in families["zerolabel_worker_stage_seconds"].samples
        if s.name.endswith("_count")
    }
    assert set(metrics.STAGES) <= stages
    assert "zerolabel_worker_images" in families and "zerolabel_writebacks" in families


def test_no_metrics_port_serves_nothing():
    assert metrics.serve("127.0.0.1", 0) is None


def test_a_taken_metrics_port_is_a_config_error_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"ZEROLABEL_METRICS_PORT={port}: cannot listen"):
            metrics.serve("127.0.0.1", port)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"ZEROLABEL_METRICS_PORT": "-1"}, "must be >= 0", id="negative"),
        pytest.param({"ZEROLABEL_METRICS_PORT": "70000"}, "not a TCP port", id="too-large"),
        pytest.param({"ZEROLABEL_METRICS_PORT": "x"}, "not an integer", id="not-a-number"),
    ],
)
def test_a_bad_metrics_port_fails_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        WorkerSettings.from_env(env)


def test_metrics_port_and_host_are_read_from_the_environment():
    env = {"ZEROLABEL_METRICS_PORT": "9100", "ZEROLABEL_METRICS_HOST": "0.0.0.0"}
    settings = WorkerSettings.from_env(env)
    assert (settings.metrics_port, settings.metrics_host) == (9100, "0.0.0.0")
    assert (WorkerSettings().metrics_port, WorkerSettings().metrics_host) == (0, "127.0.0.1")
