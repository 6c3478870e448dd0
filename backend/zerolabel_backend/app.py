"""The HTTP API Label Studio 1.23 calls: /health, /setup, /predict, /webhook, /versions, /metrics.

A task without a prediction now gets an empty list in ``results`` (Label Studio 1.23 stores
nothing for it and logs no error) and a line in the reply's ``skipped``; a late one is written
to its task by the worker when ready (:mod:`zerolabel.queue.writeback`).

The label-studio-ml protocol is spoken directly with Flask (no label-studio-ml package: its last
release pins Flask 1.1 and Werkzeug 2.0, which carry known advisories, logs request bodies with
tokens at debug level and retrains on every project edit). Every answer but /metrics
(Prometheus text: :mod:`zerolabel_backend.metrics`) is JSON: a malformed request gets a 400
naming the field and the cause, a bad task is skipped on its own, and no route answers an
HTML page. A 400's reason phrase repeats its cause (:func:`.protocol.reason_phrase`): Label
Studio shows its users the status line, never the body. With ``BASIC_AUTH_USER`` and
``BASIC_AUTH_PASS`` set, every route but ``/`` and ``/health`` requires them (the credentials
of Label Studio's "Connect Model" form).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import logging
import threading
from collections import OrderedDict
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.interactive import Interaction, read_context
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.service import Answer, PredictionService, ProjectContext
from zerolabel.settings import BackendSettings

from zerolabel_backend.metrics import install as install_metrics
from zerolabel_backend.protocol import (
    BadRequest,
    PredictRequest,
    parse_body,
    predict_request,
    reason_phrase,
    setup_request,
    task_problem,
)

logger = logging.getLogger(__name__)

MAX_PROJECTS = 10_000
"""Projects whose /setup is remembered; the least recently set up is forgotten first."""

MAX_REGISTRY_BYTES = 32 * 2**20
"""What the remembered /setup answers may take together (their options as JSON, roughly); the
least recently set up are forgotten first. Each project's options are bounded too
(:data:`zerolabel.labelstudio.options.MAX_EXTRA_PARAMS_BYTES`)."""

_OPEN_ROUTES = frozenset({"/", "/health"})


class ProjectRegistry:
    """What each project's last /setup said (hostname and options), by project id; bounded in
    count and in bytes. A project named by something that is not Label Studio's
    ``"<id>.<created timestamp>"`` (or a bare id) is not remembered."""

    def __init__(self, capacity: int = MAX_PROJECTS, max_bytes: int = MAX_REGISTRY_BYTES) -> None:
        self._lock = threading.Lock()
        self._projects: OrderedDict[int, tuple[ProjectContext, int]] = OrderedDict()
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._bytes = 0

    def remember(self, project: str, context: ProjectContext) -> None:
        key = _project_id(project)
        if key is None:
            return
        size = _size(context)
        with self._lock:
            _, old = self._projects.pop(key, (None, 0))
            self._bytes += size - old
            self._projects[key] = (context, size)
            while self._projects and (
                len(self._projects) > self._capacity or self._bytes > self._max_bytes
            ):
                _, (_, dropped) = self._projects.popitem(last=False)
                self._bytes -= dropped

    def get(self, project: str) -> ProjectContext:
        key = _project_id(project)
        with self._lock:
            found = self._projects.get(key) if key is not None else None
        return found[0] if found is not None else ProjectContext()


def _size(context: ProjectContext) -> int:
    """Roughly what a remembered context takes: its fields written as JSON."""
    return len(json.dumps(dataclasses.asdict(context), default=str)) + 64


def _project_key(project: str) -> str:
    """Label Studio sends "<id>.<created timestamp>"; the id alone names the project."""
    return project.split(".")[0]


def _project_id(project: str) -> int | None:
    """The project's id of Label Studio's "<id>.<created timestamp>"; None when it is not one."""
    key = _project_key(project)
    if not (key.isascii() and key.isdigit() and len(key) <= 18) or int(key) < 1:
        return None
    return int(key)


def create_app(service: PredictionService, settings: BackendSettings | None = None) -> Flask:
    """The Flask app; ``service`` is shared by all requests (one per process)."""
    settings = settings or service.settings
    app = Flask("zerolabel")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    projects = ProjectRegistry()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"status": "ERROR", "error": exc.description or exc.name}), exc.code or 500

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        logger.warning("%s %s refused: %s", request.method, request.path, exc)
        return _refusal(str(exc))

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        logger.exception("%s %s failed", request.method, request.path)
        return jsonify({"status": "ERROR", "error": f"internal error: {type(exc).__name__}"}), 500

    @app.before_request
    def authenticate() -> tuple[Response, int, dict[str, str]] | None:
        if settings.basic_auth is None or request.path in _OPEN_ROUTES:
            return None
        if _authorized(request.headers.get("Authorization", ""), settings.basic_auth):
            return None
        answer = jsonify({"status": "ERROR", "error": "authentication required"})
        return answer, 401, {"WWW-Authenticate": 'Basic realm="zerolabel"'}

    def body() -> dict[str, Any]:
        return parse_body(request.get_data(cache=False))

    @app.route("/", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def health() -> Response:
        queue = service.health()
        status = "UP" if queue["reachable"] else "DEGRADED"
        return jsonify({"status": status, "model_class": "ZeroLabelBackend", "queue": queue})

    @app.route("/setup", methods=["POST"])
    def setup() -> tuple[Response, int] | Response:
        """Answer the project's model_version. Label Studio 1.23 stores it on the connection:
        "Retrieve Predictions" skips tasks holding a prediction of it, and predictions without
        a version of their own get it. The project's own model_version, which the "Prediction
        score" column filters on, stays the connection's title: ``zerolabel prelabel`` sets it.
        """
        setup = setup_request(body())
        try:
            options = ProjectOptions.parse(setup.extra_params)
            context = service.context(setup.hostname, options, _project_id(setup.project))
            version = service.model_version(setup.schema, options)
        except ConfigError as exc:
            logger.warning("setup of project %s refused: %s", setup.project, exc)
            return _refusal(str(exc))
        projects.remember(setup.project, context)
        return jsonify({"model_version": version})

    @app.route("/predict", methods=["POST"])
    def predict() -> tuple[Response, int] | Response:
        asked = predict_request(body())
        context = projects.get(asked.project)
        try:
            version = service.model_version(asked.label_config, context.options)
            interaction = _interaction(asked)
            if interaction is not None:
                answers = [service.prompt(asked.tasks[0], asked.label_config, context, interaction)]
        except ConfigError as exc:
            logger.warning("predict for project %s refused: %s", asked.project, exc)
            return _refusal(str(exc))
        if interaction is None:
            answers = _predict(service, asked.tasks, asked.label_config, context)
        return jsonify(
            {
                "results": [answer.entry for answer in answers],
                "model_version": version,
                "skipped": _skipped(asked.tasks, answers),
            }
        )

    @app.route("/webhook", methods=["POST"])
    def webhook() -> Response:
        event = body().get("action")
        logger.debug("webhook event %s ignored", event)
        return jsonify({"status": "ok", "event": event if isinstance(event, str) else None})

    @app.route("/versions", methods=["GET", "POST"])
    def versions() -> Response:
        return jsonify({"versions": [], "model_dir": None})

    install_metrics(app, service, settings)  # GET /metrics, request and task counts
    return app


def _refusal(message: str) -> Response:
    """A JSON 400 whose status line carries the reason too: all that Label Studio shows of it."""
    answer = jsonify({"status": "ERROR", "error": message})
    answer.status = f"400 {reason_phrase(message)}"
    return answer


def _interaction(asked: PredictRequest) -> Interaction | None:
    """The smart-tool regions of an interactive request (one task); None for a plain predict.

    Raises:
        ConfigError: the context does not fit the labeling config, or comes with other than one
            well-formed task (the message names the cause).
    """
    if asked.context is None:
        return None
    first = asked.tasks[0] if len(asked.tasks) == 1 else None
    task_id = first.get("id") if isinstance(first, dict) else None
    interaction = read_context(asked.context, asked.label_config, task_id)
    if interaction is None:
        return None
    if first is None:
        raise ConfigError(f"an interactive request takes one task, got {len(asked.tasks)}")
    problem = task_problem(first)
    if problem:
        raise ConfigError(problem)
    return interaction


def _predict(
    service: PredictionService, tasks: list[Any], label_config: str, context: ProjectContext
) -> list[Answer]:
    """One answer per task, in order; a malformed task gets an answer of its own."""
    answers: list[Answer | None] = []
    good: list[dict[str, Any]] = []
    for task in tasks:
        problem = task_problem(task)
        if problem:
            logger.warning("task refused: %s", problem)
        answers.append(Answer(reason=problem) if problem else None)
        if not problem:
            good.append(task)
    served = iter(service.answer(good, label_config, context) if good else [])
    return [answer if answer is not None else next(served) for answer in answers]


def _skipped(tasks: list[Any], answers: list[Answer]) -> list[dict[str, Any]]:
    """The tasks answered without a prediction, why, and whether it is written when ready.

    Label Studio reads only ``results``; this list is for people and tools reading the reply.
    """
    return [
        {
            "index": index,
            "task": task.get("id") if isinstance(task, dict) else None,
            "reason": answer.reason,
            "pending": answer.pending,
        }
        for index, (task, answer) in enumerate(zip(tasks, answers, strict=True))
        if answer.prediction is None
    ]


def _authorized(header: str, credentials: tuple[str, str]) -> bool:
    """HTTP basic credentials, compared in constant time."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):  # not base64 (non-ASCII too), or not UTF-8 inside
        return False
    user_ok = hmac.compare_digest(user.encode(), credentials[0].encode())
    password_ok = hmac.compare_digest(password.encode(), credentials[1].encode())
    return user_ok and password_ok
