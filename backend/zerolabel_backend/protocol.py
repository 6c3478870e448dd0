"""The bodies Label Studio sends, checked before anything is queued.

Label Studio 1.23 calls ``POST /setup`` with ``{"project", "schema", "hostname", "access_token",
"extra_params"}`` and ``POST /predict`` with ``{"tasks": [...], "project", "label_config",
"params"}``. Whatever arrives is checked here: a body that is not a JSON object, a field of the
wrong type or a labeling config that cannot be served is a :class:`BadRequest` (a JSON 400 with
the reason); a single malformed task is a per-task error, never the batch's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_TASKS = 1000
"""Tasks accepted in one /predict (Label Studio sends batches of tens)."""


class BadRequest(ValueError):
    """A request the backend refuses; the message says which field and why."""


@dataclass(frozen=True)
class SetupRequest:
    project: str
    schema: str
    hostname: str | None
    extra_params: str | dict[str, Any] | None


@dataclass(frozen=True)
class PredictRequest:
    project: str
    label_config: str
    tasks: list[Any]  # each checked by :func:`task_problem`


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body."""
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"the request body is not valid JSON: {reason}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {_kind(body)}")
    return body


def setup_request(body: dict[str, Any]) -> SetupRequest:
    extra = body.get("extra_params")
    if extra is not None and not isinstance(extra, str | dict):
        raise BadRequest(f"'extra_params' must be a JSON object or a string, got {_kind(extra)}")
    token = body.get("access_token")
    if token is not None and not isinstance(token, str):
        raise BadRequest(f"'access_token' must be a string, got {_kind(token)}")
    return SetupRequest(
        project=_project(body),
        schema=_text(body, "schema"),
        hostname=_text(body, "hostname") or None,
        extra_params=extra,
    )


def predict_request(body: dict[str, Any]) -> PredictRequest:
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest(f"'tasks' must be a list of tasks, got {_kind(tasks)}")
    if len(tasks) > MAX_TASKS:
        raise BadRequest(f"{len(tasks)} tasks in one request; at most {MAX_TASKS} are accepted")
    params = body.get("params")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"'params' must be a JSON object, got {_kind(params)}")
    return PredictRequest(_project(body), _text(body, "label_config"), tasks)


def task_problem(task: Any) -> str | None:
    """Why one task cannot be served, or None when its shape is right."""
    if not isinstance(task, dict):
        return f"a task must be a JSON object, got {_kind(task)}"
    if task.get("id") is not None and not isinstance(task["id"], int):
        return f"task id must be an integer, got {_kind(task['id'])}"
    if not isinstance(task.get("data"), dict):
        return f"task {task.get('id')}: 'data' must be a JSON object, got {_kind(task.get('data'))}"
    return None


def _project(body: dict[str, Any]) -> str:
    project = body.get("project")
    if project is None:
        return ""
    if isinstance(project, bool) or not isinstance(project, str | int):
        raise BadRequest(f"'project' must be a string or an integer, got {_kind(project)}")
    return str(project)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )
