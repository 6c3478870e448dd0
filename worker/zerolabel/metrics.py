"""Prometheus metrics of the library's processes: workers and write-backs of late predictions.

Exported (``rate(zerolabel_worker_images_total[1m])`` is images per second):

- ``zerolabel_worker_images_total``: images run through discovery.
- ``zerolabel_worker_cache_hits_total``: jobs answered from the result cache (no discovery run).
- ``zerolabel_worker_failures_total{cause}``: failed fetches and runs, by exception class
  (``TransientFetchError``, ``ImageLoadError``, ``ConfigError``, ``WeightsError``, ...).
- ``zerolabel_worker_stage_seconds{stage}``: seconds per image in each stage: ``fetch``
  (download or file read) and ``decode`` (in a batching worker these run in download threads,
  overlapping the previous batch's forward pass), the pipeline's
  :class:`~zerolabel.stages.Timings` (``preprocess``, ``forward``, ``method``, ``refine``,
  and any other ``<stage>_s`` field), and a batching worker's queue stages (``claim``: taking
  jobs off the queue; ``wait``: the device idle until the batch's downloads are done;
  ``finish``: results and job states written back through RQ); a batch's time is shared
  equally among its images.
- ``zerolabel_worker_batch_size``: images per discovery run (one :meth:`Runner.run` call).
- ``zerolabel_worker_gpu_memory_bytes{device,kind}``: CUDA memory allocated and reserved by
  this process, read at scrape time (only once CUDA is in use).
- ``zerolabel_writebacks_total{outcome}``: late predictions written back to Label Studio.

Metrics live in prometheus_client's default registry, created on first use (:func:`metrics`),
so importing this module changes nothing. A worker serves them over HTTP when
``ZEROLABEL_METRICS_PORT`` is set (:func:`serve`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zerolabel.errors import ConfigError

if TYPE_CHECKING:
    from zerolabel.stages import Timings

logger = logging.getLogger(__name__)

STAGES = ("fetch", "decode", "claim", "wait", "preprocess", "forward", "method", "refine", "finish")
"""Stages whose series exist from the start (at zero); other Timings fields add their own."""
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
WRITEBACK_OUTCOMES = ("written", "skipped", "failed")
"""``written``: stored in Label Studio; ``skipped``: nothing to write (e.g. the task is gone);
``failed``: Label Studio refused it or could not be reached."""


class Metrics:
    """The library's metric objects, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.images = Counter(
            "zerolabel_worker_images", "Images run through discovery.", registry=registry
        )
        self.cache_hits = Counter(
            "zerolabel_worker_cache_hits",
            "Jobs answered from the result cache.",
            registry=registry,
        )
        self.failures = Counter(
            "zerolabel_worker_failures",
            "Failed image fetches and discovery runs, by exception class.",
            ["cause"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "zerolabel_worker_stage_seconds",
            "Seconds per image spent in each stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "zerolabel_worker_batch_size",
            "Images per discovery run.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.writebacks = Counter(
            "zerolabel_writebacks",
            "Late predictions written back to Label Studio, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for outcome in WRITEBACK_OUTCOMES:
            self.writebacks.labels(outcome)

    def observe_stage(self, stage: str, seconds: float, images: int = 1) -> None:
        """``seconds`` spent on ``images`` images in ``stage``: one observation per image."""
        if images < 1:
            return
        share = max(seconds, 0.0) / images
        histogram = self.stage_seconds.labels(stage)
        for _ in range(images):
            histogram.observe(share)

    def observe_run(self, before: Timings | None, after: Timings | None, images: int) -> None:
        """A finished discovery run of ``images`` images: its batch, images and the stage times
        its runner's timings gained from ``before`` to ``after``."""
        self.batch_size.observe(images)
        self.images.inc(images)
        if before is None or after is None:
            return
        for field in dataclasses.fields(after):
            if field.name.endswith("_s"):
                spent = getattr(after, field.name) - getattr(before, field.name)
                self.observe_stage(field.name.removesuffix("_s"), spent, images)

    def observe_failure(self, exc: BaseException) -> None:
        self.failures.labels(type(exc).__name__).inc()


_CREATING = threading.Lock()


def metrics() -> Metrics:
    """The process's metrics, in the default registry (created on first use, by one thread)."""
    with _CREATING:
        return _created()


@functools.cache
def _created() -> Metrics:
    return Metrics()


def observe_batch(size: int) -> None:
    """One discovery run of ``size`` images (:func:`running` calls this itself)."""
    metrics().batch_size.observe(size)


def observe_stage(stage: str, seconds: float, images: int = 1) -> None:
    """``seconds`` spent on ``images`` images in ``stage`` (shared equally among them)."""
    metrics().observe_stage(stage, seconds, images)


def observe_cache_hit() -> None:
    metrics().cache_hits.inc()


def observe_failure(exc: BaseException) -> None:
    """A failure, labelled with the exception's class name."""
    metrics().observe_failure(exc)


def observe_writeback(outcome: str = "written") -> None:
    """One late prediction written back (or skipped, or failed): see :data:`WRITEBACK_OUTCOMES`.

    Raises:
        ValueError: an outcome not in :data:`WRITEBACK_OUTCOMES`.
    """
    if outcome not in WRITEBACK_OUTCOMES:
        raise ValueError(f"write-back outcome {outcome!r}: use one of {WRITEBACK_OUTCOMES}")
    metrics().writebacks.labels(outcome).inc()


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Time one image's ``stage``; nothing is observed when the block raises."""
    start = time.perf_counter()
    yield
    metrics().observe_stage(stage, time.perf_counter() - start)


@contextlib.contextmanager
def failures() -> Iterator[None]:
    """Count an exception leaving the block (by class), then let it go on."""
    try:
        yield
    except Exception as exc:
        observe_failure(exc)
        raise


@contextlib.contextmanager
def running(runner: object, images: int) -> Iterator[None]:
    """One ``runner.run`` call on ``images`` images: when it succeeds, its batch size, images
    and the stage times its :class:`~zerolabel.stages.Timings` gained (count failures with
    :func:`failures` around it, with the model loading)."""
    timings = getattr(runner, "timings", None)  # stand-ins (tests) may keep none
    before = dataclasses.replace(timings) if timings is not None else None
    yield
    metrics().observe_run(before, timings, images)


class GpuMemoryCollector(Collector):
    """CUDA memory of this process, read at scrape time; nothing until CUDA is initialised."""

    NAME = "zerolabel_worker_gpu_memory_bytes"

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        torch = sys.modules.get("torch")  # never imports torch (or initialises CUDA) itself
        if torch is None or not torch.cuda.is_initialized():
            return []
        family = self._family()
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            family.add_metric([device, "allocated"], float(torch.cuda.memory_allocated(index)))
            family.add_metric([device, "reserved"], float(torch.cuda.memory_reserved(index)))
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME, "CUDA memory of this worker process in bytes.", labels=["device", "kind"]
        )


@functools.cache
def _gpu_collector() -> GpuMemoryCollector:
    collector = GpuMemoryCollector()
    REGISTRY.register(collector)
    return collector


def serve(host: str, port: int) -> WSGIServer | None:
    """Serve this process's metrics on ``host:port`` (``ZEROLABEL_METRICS_HOST`` and
    ``ZEROLABEL_METRICS_PORT``), from a daemon thread.

    Returns:
        The server (``shutdown()`` stops it), or None when ``ZEROLABEL_METRICS_PORT`` is 0.

    Raises:
        ConfigError: the address cannot be bound (e.g. the port is taken).
    """
    if not port:
        return None
    metrics()
    _gpu_collector()
    try:
        server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(
            f"ZEROLABEL_METRICS_PORT={port}: cannot listen on {host}:{port} "
            f"({exc.strerror or exc}); choose a free port, or 0 to serve no metrics"
        ) from None
    logger.info("metrics served on http://%s:%d/metrics", host, port)
    return server
