"""The HTTP API Label Studio 1.23 calls: /health, /setup, /predict, /webhook, /versions.

Served by our own small Flask app rather than label-studio-ml 1.0.9's, which logs request
bodies (tokens included) at debug level, answers GET /versions with 405, treats every project
edit as a training event that changes the model version, and fails /predict before /setup.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, jsonify, request
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.service import PredictionService, ProjectContext

from zerolabel_backend.model import ZeroLabelBackend

logger = logging.getLogger(__name__)


class ProjectRegistry:
    """What each project's last /setup said (hostname, token, options), by project id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._projects: dict[str, ProjectContext] = {}

    def remember(self, project: Any, context: ProjectContext) -> None:
        with self._lock:
            self._projects[_project_key(project)] = context

    def get(self, project: Any) -> ProjectContext:
        with self._lock:
            return self._projects.get(_project_key(project), ProjectContext())


def _project_key(project: Any) -> str:
    """Label Studio sends "<id>.<created timestamp>"; the id alone names the project."""
    return str(project or "").split(".")[0]


def create_app(service: PredictionService) -> Flask:
    """The Flask app; ``service`` is shared by all requests (one per process)."""
    app = Flask("zerolabel")
    projects = ProjectRegistry()

    def model(label_config: str, context: ProjectContext) -> ZeroLabelBackend:
        return ZeroLabelBackend(
            label_config,
            service=service,
            options=context.options,
            hostname=context.hostname or "",
            access_token=context.access_token or "",
        )

    @app.route("/", methods=["GET"])
    @app.route("/health", methods=["GET"])
    def health() -> Any:
        queue = service.health()
        status = "UP" if queue["reachable"] else "DEGRADED"
        return jsonify({"status": status, "model_class": "ZeroLabelBackend", "queue": queue})

    @app.route("/setup", methods=["POST"])
    def setup() -> Any:
        data = request.get_json(silent=True) or {}
        try:
            options = ProjectOptions.parse(data.get("extra_params"))
            context = ProjectContext(
                data.get("hostname") or None, data.get("access_token") or None, options
            )
            version = model(data.get("schema") or "", context).model_version
        except ConfigError as exc:
            logger.warning("setup of project %s refused: %s", data.get("project"), exc)
            return jsonify({"status": "ERROR", "error": str(exc)}), 400
        projects.remember(data.get("project"), context)
        return jsonify({"model_version": version})

    @app.route("/predict", methods=["POST"])
    def predict() -> Any:
        data = request.get_json(silent=True) or {}
        tasks = data.get("tasks") or []
        context = projects.get(data.get("project"))
        try:
            backend = model(data.get("label_config") or "", context)
            results = backend.predict(tasks, **(data.get("params") or {}))
            version = backend.model_version
        except ConfigError as exc:
            logger.warning("predict for project %s refused: %s", data.get("project"), exc)
            return jsonify({"status": "ERROR", "error": str(exc)}), 400
        return jsonify({"results": results, "model_version": version})

    @app.route("/webhook", methods=["POST"])
    def webhook() -> Any:
        event = (request.get_json(silent=True) or {}).get("action")
        logger.debug("webhook event %s ignored", event)
        return jsonify({"status": "ok", "event": event}), 200

    @app.route("/versions", methods=["GET", "POST"])
    def versions() -> Any:
        return jsonify({"versions": [], "model_dir": None})

    @app.route("/metrics", methods=["GET"])
    def metrics() -> Any:
        return jsonify({})

    return app
