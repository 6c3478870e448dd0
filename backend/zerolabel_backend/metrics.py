"""``/metrics`` of the backend, in Prometheus text format.

Exported:

- ``zerolabel_http_requests_total{route,method,status}`` and
  ``zerolabel_http_request_duration_seconds{route}`` (histogram): every request, by route
  pattern (``other`` for unknown paths).
- ``zerolabel_tasks_total{outcome}``: tasks /predict answered with a prediction (``answered``),
  without one because their job was still running (``late``), because a worker already wrote
  it to the task (``written``) or because it failed (``failed``).
- ``zerolabel_queue_up``, ``zerolabel_queue_depth``, ``zerolabel_queue_started_jobs`` and
  ``zerolabel_queue_workers``: read from Redis at scrape time.
- The library's metrics of this process (:mod:`zerolabel.metrics`, e.g. write-backs) and
  prometheus_client's process metrics.

Several processes (gunicorn workers) share one ``PROMETHEUS_MULTIPROC_DIR``: every process
writes its values there and /metrics sums them all (``MultiProcessCollector``). The variable
must be set before the processes start, to an empty folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException
from zerolabel.queue.service import WRITTEN, PredictionService
from zerolabel.settings import BackendSettings

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
TASK_OUTCOMES = ("answered", "late", "written", "failed")
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
_OTHER = "other"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BackendMetrics:
    """The backend's request and task metrics, registered in ``registry`` (None: in none)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter(
            "zerolabel_http_requests",
            "HTTP requests, by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "zerolabel_http_request_duration_seconds",
            "Seconds to answer an HTTP request, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tasks = Counter(
            "zerolabel_tasks",
            "Tasks /predict answered, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in TASK_OUTCOMES:
            self.tasks.labels(outcome)

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(route, method if method in _METHODS else _OTHER, status).inc()
        self.latency.labels(route).observe(seconds)

    def observe_predictions(self, answer: dict[str, Any]) -> None:
        """Count the tasks of a /predict reply by outcome."""
        for outcome in task_outcomes(answer):
            self.tasks.labels(outcome).inc()


def task_outcomes(answer: dict[str, Any]) -> list[str]:
    """The outcome of each task of a /predict reply: ``answered`` (a prediction in
    ``results``), ``late`` (its job is still running), ``written`` (a worker already wrote its
    prediction to the task) or ``failed``, read from the reply's ``skipped`` reasons."""
    results = answer.get("results")
    skipped = answer.get("skipped")
    outcomes = [
        "answered" for entry in results or [] if isinstance(entry, dict) and "result" in entry
    ]
    for item in skipped if isinstance(skipped, list) else []:
        reason = item.get("reason") if isinstance(item, dict) else None
        if isinstance(reason, str) and reason.startswith("late"):
            outcomes.append("late")
        elif reason == WRITTEN:
            outcomes.append("written")
        else:
            outcomes.append("failed")
    return outcomes


class QueueCollector(Collector):
    """The queue as Redis has it at scrape time; ``zerolabel_queue_up`` 0 when unreachable."""

    def __init__(self, service: PredictionService) -> None:
        self.dispatcher = service.dispatcher

    def collect(self) -> Iterable[Metric]:
        queue = self.dispatcher.settings.queue
        health = self.dispatcher.health()
        up = GaugeMetricFamily("zerolabel_queue_up", "1 when Redis answers, else 0.")
        up.add_metric([], 1.0 if health["reachable"] else 0.0)
        if not health["reachable"]:
            return [up]
        try:
            started = self.dispatcher.queue.started_job_registry.count
        except (RedisError, OSError):
            return [up]
        families = [up]
        for name, text, value in (
            ("zerolabel_queue_depth", "Jobs waiting in the queue.", health["queue_depth"]),
            ("zerolabel_queue_started_jobs", "Jobs being run by workers.", started),
            ("zerolabel_queue_workers", "Workers with a live heartbeat.", health["workers"]),
        ):
            family = GaugeMetricFamily(name, text, labels=["queue"])
            family.add_metric([queue], float(value))
            families.append(family)
        return families


class _Registry(Collector):
    """Another registry's metrics (the default one: library and process metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def scrape_registry(
    service: PredictionService, settings: BackendSettings
) -> tuple[CollectorRegistry, BackendMetrics]:
    """What /metrics exposes, and the metrics requests are recorded in.

    With ``PROMETHEUS_MULTIPROC_DIR`` the values come from every process's files there;
    otherwise from this process (its own registry plus the default one).
    """
    registry = CollectorRegistry()
    if settings.prometheus_multiproc_dir:
        MultiProcessCollector(registry, path=settings.prometheus_multiproc_dir)  # type: ignore[no-untyped-call]
        recorded = BackendMetrics(None)  # written to this process's files, summed above
    else:
        recorded = BackendMetrics(registry)
        registry.register(_Registry(REGISTRY))
    registry.register(QueueCollector(service))
    return registry, recorded


def install(app: Flask, service: PredictionService, settings: BackendSettings) -> BackendMetrics:
    """Serve ``GET /metrics`` on ``app`` and record its requests and /predict answers."""
    registry, recorded = scrape_registry(service, settings)
    app.wsgi_app = _timed(app, app.wsgi_app, recorded)  # type: ignore[method-assign,assignment]

    @app.after_request
    def count_tasks(response: Response) -> Response:
        rule = request.url_rule
        if rule is not None and rule.rule == "/predict" and response.status_code == 200:
            answer = response.get_json(silent=True)
            if isinstance(answer, dict):
                recorded.observe_predictions(answer)
        return response

    @app.route("/metrics", methods=["GET"])
    def metrics() -> Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return Response(encode(registry), content_type=content_type)

    return recorded


def _timed(app: Flask, wsgi_app: WSGIApp, recorded: BackendMetrics) -> WSGIApp:
    """``wsgi_app``, with each request's route, method, status and duration recorded."""

    def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start = time.perf_counter()
        status = ["500"]

        def capture(code: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = code.split(" ", 1)[0]
            return start_response(code, headers, exc_info)

        try:
            return wsgi_app(environ, capture)
        finally:
            method = str(environ.get("REQUEST_METHOD", ""))
            seconds = time.perf_counter() - start
            recorded.observe_request(_route(app, environ), method, status[0], seconds)

    return timed


def _route(app: Flask, environ: dict[str, Any]) -> str:
    """The route pattern a request matched (never its raw path), or ``other``."""
    try:
        rule, _ = app.url_map.bind_to_environ(environ).match(return_rule=True)
    except HTTPException:  # not found, wrong method, redirect
        return _OTHER
    return str(rule.rule)
