"""The bodies Label Studio sends, checked before anything is queued.

Label Studio 1.23 calls ``POST /setup`` with ``{"project", "schema", "hostname", "access_token",
"extra_params"}`` and ``POST /predict`` with ``{"tasks": [...], "project", "label_config",
"params"}``; an interactive request (a smart tool's regions) has one task and
``params.context`` (read by :mod:`zerolabel.labelstudio.interactive`). Whatever arrives is
checked here: a body that is not a JSON object, a field of the wrong type or a labeling config
that cannot be served is a :class:`BadRequest` (a JSON 400 with the reason); a single malformed
task is a per-task error, never the batch's.

A refusal's reason also travels in the HTTP status line (:func:`reason_phrase`): Label Studio
1.23 raises on any status >= 400 and shows its users ``str(HTTPError)``, "400 Client Error:
<reason phrase> for url: ...", in the Connect Model form and as the connection's error; the JSON
body never reaches them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from zerolabel.sites import redact_user_info

MAX_TASKS = 1000
"""Tasks accepted in one /predict (Label Studio sends batches of tens)."""

MAX_REASON_CHARS = 300
"""Longest reason phrase of a refusal: a status line, and what Label Studio keeps of it."""

_URL_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s?#]*)[?#][^\s)\]'\"]*")
_NOT_LATIN1_PRINTABLE = re.compile(r"[^\x20-\x7e\xa0-\xff]")


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
    context: Any = None  # params.context: the regions of an interactive request, if any


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
    context = params.get("context") if params is not None else None
    return PredictRequest(_project(body), _text(body, "label_config"), tasks, context)


def task_problem(task: Any) -> str | None:
    """Why one task cannot be served, or None when its shape is right."""
    if not isinstance(task, dict):
        return f"a task must be a JSON object, got {_kind(task)}"
    if task.get("id") is not None and (
        isinstance(task["id"], bool) or not isinstance(task["id"], int)
    ):
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


def reason_phrase(message: str, fallback: str = "BAD REQUEST") -> str:
    """``message`` made fit for an HTTP status line, where Label Studio shows it.

    Whitespace (CR and LF included) is folded to single spaces, URLs lose their user info and
    query, characters outside printable Latin-1 become ``?`` (the status line's charset), and
    the phrase is cut to :data:`MAX_REASON_CHARS` (ending in ``...``). An empty result gives
    ``fallback``.
    """
    text = redact_user_info(" ".join(message.split()))
    text = _URL_QUERY.sub(r"\1", text)
    text = _NOT_LATIN1_PRINTABLE.sub("?", unicodedata.normalize("NFKC", text)).strip()
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 3].rstrip() + "..."
    return text or fallback


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )
