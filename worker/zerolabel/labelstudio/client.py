"""A small Label Studio REST client: projects, tasks and predictions (no torch, no sdk).

Usage::

    client = LabelStudioClient("http://127.0.0.1:8080", token)
    for task in client.tasks(project_id):
        versions = {p["model_version"] for p in task["predictions"]}
    client.create_prediction(task_id, result, score=0.9, model_version="zerolabel-lost-...")

Authentication (a legacy token, or a personal access token exchanged for short-lived access
tokens) is :class:`~zerolabel.labelstudio.auth.LabelStudioAuth`'s, bound to the client's URL.

Every failure raises :class:`LabelStudioError` (a :class:`~zerolabel.errors.DiscoveryError`) with
the HTTP status, method, path and Label Studio's own message; messages never hold a token.
Reads (GET, PATCH) are retried after connection failures, timeouts and transient statuses by
the session's :class:`~zerolabel.transport.Retries`; a POST is never sent twice, since a lost
reply may hide a prediction that was stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from zerolabel.errors import DiscoveryError, LabelStudioError, TokenExchangeError
from zerolabel.labelstudio.auth import TOKEN_REFRESH_PATH, LabelStudioAuth
from zerolabel.transport import TRANSIENT_STATUSES, Retries, plain_session, timed_out

logger = logging.getLogger(__name__)

_RETRIED_METHODS = frozenset({"GET", "PATCH"})
_BACKOFF_S = 0.5
_MESSAGE_CHARS = 500


class LabelStudioClient:
    """Label Studio REST calls under one token; holds the HTTP session and the access token.

    Not thread-safe: use one per thread. Close it, or use it as a context manager.

    Args:
        url: Label Studio base URL, e.g. ``http://127.0.0.1:8080`` (a path prefix is kept).
        token: a legacy API token or a personal access token.
        timeout_s: time allowed for each HTTP request.
        retries: further attempts of a GET or PATCH after a transient failure.
        clock: monotonic clock for the access token's expiry (tests pass a fake).
        sleep: pause between attempts (tests pass a fake).

    Raises:
        ValueError: no token, or ``url`` is not an http(s) URL with a host and no user info.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout_s: float = 30,
        retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise ValueError("a Label Studio token is needed (legacy token or personal access)")
        retry = Retries.transient(retries, _BACKOFF_S, _RETRIED_METHODS, sleep=sleep)
        self._session = plain_session(HTTPAdapter(max_retries=retry))  # no ~/.netrc credentials
        self._auth = LabelStudioAuth(  # ConfigError is a ValueError
            url, token, session=self._session, timeout_s=timeout_s, clock=clock
        )
        self.url = self._auth.base_url
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r}, <{self._auth.kind}>)"

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    # --- projects ------------------------------------------------------------------------

    def project(self, project_id: int) -> dict[str, Any]:
        """The project as ``GET /api/projects/{id}`` returns it."""
        return dict(self.request("GET", f"/api/projects/{project_id}"))

    def label_config(self, project_id: int) -> str:
        """The project's labeling config (XML)."""
        return str(self.project(project_id)["label_config"])

    def set_label_config(self, project_id: int, label_config: str) -> dict[str, Any]:
        """Replace the project's labeling config; returns the updated project.

        Label Studio answers 400 (a :class:`LabelStudioError`) for XML it cannot parse.
        """
        body = {"label_config": label_config}
        return dict(self.request("PATCH", f"/api/projects/{project_id}", json=body))

    def export(self, project_id: int, *, all_tasks: bool = True) -> list[dict[str, Any]]:
        """The project's tasks with annotations and predictions, in Label Studio's JSON export.

        Args:
            project_id: the project.
            all_tasks: include tasks without annotations; Label Studio leaves them out
                by default.
        """
        params = {"exportType": "JSON", "download_all_tasks": "true" if all_tasks else "false"}
        return list(self.request("GET", f"/api/projects/{project_id}/export", params=params))

    def update_ml_backend(
        self, connection: dict[str, Any], extra_params: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the Extra params of an ML backend connection (``PATCH /api/ml/{id}``);
        returns the connection as Label Studio stored it.

        Label Studio 1.23 checks a connection before saving it: it calls the backend's
        ``/health`` and then ``/setup`` with the new Extra params (a backend that refuses them
        makes it answer 400 with the backend's error), and it needs the connection's URL,
        project and authentication in the body to do so. The basic-auth password is never
        readable: an empty one keeps the one stored. After saving it calls ``/setup`` again and
        stores the version the backend answers in the reply's ``model_version``.

        Args:
            connection: the connection as :meth:`ml_backends` lists it.
            extra_params: the new Extra params.
        """
        body: dict[str, Any] = {
            "url": connection["url"],
            "project": connection["project"],
            "auth_method": connection.get("auth_method") or "NONE",
            "extra_params": extra_params,
        }
        if body["auth_method"] == "BASIC_AUTH":
            body["basic_auth_user"] = connection.get("basic_auth_user") or ""
            body["basic_auth_pass"] = ""  # Label Studio keeps the stored password
        return dict(self.request("PATCH", f"/api/ml/{int(connection['id'])}", json=body))

    # --- tasks -----------------------------------------------------------------------------

    def tasks(self, project_id: int, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every task of the project in id order, each with its ``predictions`` list.

        Reads the data manager's ``GET /api/tasks?project=&page=&page_size=&fields=all``
        page by page (``{"total", "tasks": [...]}``); Label Studio answers 404 past the last
        page, which ends the iteration as a short page does.
        """
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        page, seen = 1, 0
        while True:
            params = {"project": project_id, "page": page, "page_size": page_size, "fields": "all"}
            try:
                reply = self.request("GET", "/api/tasks", params=params)
            except LabelStudioError as exc:
                if exc.status == 404 and page > 1:
                    return  # tasks were deleted while we read
                raise
            batch = reply.get("tasks") or []
            yield from batch
            seen += len(batch)
            if len(batch) < page_size or seen >= int(reply.get("total", 0)):
                return
            page += 1

    # --- predictions -------------------------------------------------------------------

    def project_tasks(self, project_id: int, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The project's tasks of these ids, each with its ``data`` as stored and its
        ``predictions``; ids of tasks in other projects (or of no task) are left out.

        Read through the project's JSON export (``GET /api/projects/{id}/export?ids[]=``): the
        task read of Label Studio 1.23 that never asks an ML backend for predictions. ``GET
        /api/tasks/{id}`` calls the project's ML backend ``/predict`` synchronously when the task
        has no prediction and "Use predictions to prelabel tasks" is on (Label Studio's
        default), and the Data Manager's task list does the same for the tasks of its page when
        the project's ``evaluate_predictions_automatically`` is on. A worker about to write a
        task's prediction must never make Label Studio wait on the very job it is finishing.
        The data is as stored (storage URLs such as ``s3://...`` not turned into proxy URLs),
        as ``/predict`` receives it.
        """
        if not task_ids:
            return []
        params = {"exportType": "JSON", "download_all_tasks": "true", "ids[]": list(task_ids)}
        return list(self.request("GET", f"/api/projects/{project_id}/export", params=params))

    def predictions(
        self, project_id: int | None = None, *, task_id: int | None = None
    ) -> list[dict[str, Any]]:
        """Predictions of a project (``GET /api/predictions?project=``), of a task, or both."""
        params: dict[str, Any] = {}
        if project_id is not None:
            params["project"] = project_id
        if task_id is not None:
            params["task"] = task_id
        if not params:
            raise ValueError("give a project_id, a task_id or both")
        return list(self.request("GET", "/api/predictions", params=params))

    def create_prediction(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        score: float,
        model_version: str,
        *,
        project: int | None = None,
    ) -> dict[str, Any]:
        """Store one prediction for a task (``POST /api/predictions``); returns it with its id.

        ``project`` is the task's project: Label Studio 1.23 looks it up itself when it is
        missing and logs a warning for every such prediction.

        Never retried: after a failure with no reply, look the task's predictions up before
        trying again.
        """
        body: dict[str, Any] = {
            "task": task_id,
            "result": result,
            "score": score,
            "model_version": model_version,
        }
        if project is not None:
            body["project"] = project
        return dict(self.request("POST", "/api/predictions", json=body))

    def update_prediction(self, prediction_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace a prediction's result (``PATCH /api/predictions/{id}``)."""
        body = {"result": result}
        return dict(self.request("PATCH", f"/api/predictions/{prediction_id}", json=body))

    # --- import and local files ------------------------------------------------------------

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Create tasks, with their ``predictions``, in a project
        (``POST /api/projects/{id}/import``); returns Label Studio's counts (``task_count``,
        ``prediction_count``...). Never retried: a lost reply may hide an import that was made.
        """
        return dict(self.request("POST", f"/api/projects/{project_id}/import", json=tasks) or {})

    def local_storages(self, project_id: int) -> list[dict[str, Any]]:
        """The project's local-files import storages (``GET /api/storages/localfiles``)."""
        params = {"project": project_id}
        return list(self.request("GET", "/api/storages/localfiles", params=params) or [])

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """The project's ML backend connections (``GET /api/ml?project=``): each with its
        ``url``, ``title`` and ``extra_params`` (the per-project options it sends to /setup)."""
        params = {"project": project_id}
        return list(self.request("GET", "/api/ml", params=params) or [])

    def create_local_storage(self, project_id: int, path: str, *, title: str) -> dict[str, Any]:
        """Let the project's tasks read files below ``path`` (absolute, on the Label Studio
        host, inside its LOCAL_FILES_DOCUMENT_ROOT) through ``/data/local-files/?d=`` URLs.

        Label Studio checks the path when it creates the storage (400 with its reason). The
        storage is not synced: a sync would add a task of its own for every file.
        """
        body = {"project": project_id, "path": path, "use_blob_urls": True, "title": title}
        return dict(self.request("POST", "/api/storages/localfiles", json=body))

    # --- transport ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """One API call; returns the decoded JSON reply (None for an empty body).

        Args:
            method: HTTP method.
            path: path under the base URL, starting with ``/``.
            params: query parameters.
            json: request body.

        Raises:
            LabelStudioError: the call failed, after the retries GET and PATCH get.
        """
        shown = _shown_path(path, params)
        logger.debug("%s %s", method, shown)
        try:
            response = self._session.request(
                method,
                self.url + path,
                headers={"Accept": "application/json"},
                params=params,
                json=json,
                auth=self._auth,
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except TokenExchangeError as exc:
            raise self._exchange_error(exc, shown) from None
        except requests.RequestException as exc:
            raise self._no_reply(exc, method, shown) from None
        with response:
            self._check(response, method, shown)
            return _json(response, method, shown)

    def _no_reply(
        self, exc: requests.RequestException, method: str, shown: str
    ) -> LabelStudioError:
        """The error of a call that got no reply, once the retries are spent."""
        if timed_out(exc):
            return LabelStudioError(None, method, shown, f"timed out after {self.timeout_s:g} s")
        return LabelStudioError(None, method, shown, f"request failed ({type(exc).__name__})")

    def _check(self, response: requests.Response, method: str, shown: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = self._auth.scrub(_ls_message(response))
        if status in (401, 403):
            message += f"; {self._auth.hint()}"
        raise LabelStudioError(status, method, shown, message)

    @staticmethod
    def _exchange_error(exc: TokenExchangeError, shown: str) -> LabelStudioError:
        """The error of a call that needed a token exchange Label Studio did not grant."""
        message = exc.detail
        if exc.refused:
            message = (
                f"Label Studio refused the personal access token (token exchange for {shown}): "
                f"{exc.detail}; create a new token in Account & Settings"
            )
        return LabelStudioError(exc.status, "POST", TOKEN_REFRESH_PATH, message)


def is_transient(exc: DiscoveryError) -> bool:
    """A failure with no reply, or a status a later attempt may not get (429, 5xx).

    After a failed POST with no reply the request may have been stored: look before posting
    again.
    """
    return isinstance(exc, LabelStudioError) and (
        exc.status is None or exc.status in TRANSIENT_STATUSES
    )


def _ls_message(response: requests.Response) -> str:
    """Label Studio's ``detail`` plus ``validation_errors``, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "validation_errors" in body):
        message = str(body.get("detail") or response.reason or "")
        errors = body.get("validation_errors")
        if isinstance(errors, dict) and errors:
            message += f" ({_field_errors(errors)})"
        elif errors:
            message += f" ({errors})"
        return message[:_MESSAGE_CHARS]
    text = " ".join(response.text.split())
    return (text[:_MESSAGE_CHARS] or response.reason or "").strip()


def _field_errors(errors: dict[str, Any]) -> str:
    """``{"task": ["Invalid pk"]}`` -> ``task: Invalid pk``."""
    parts = []
    for name, problems in errors.items():
        text = " ".join(map(str, problems)) if isinstance(problems, list) else str(problems)
        parts.append(f"{name}: {text}")
    return "; ".join(parts)


def _json(response: requests.Response, method: str, shown: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        reason = f"the reply is not JSON ({kind}): is the URL Label Studio's?"
        raise LabelStudioError(response.status_code, method, shown, reason) from None


def _shown_path(path: str, params: dict[str, Any] | None) -> str:
    if not params:
        return path
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{path}?{query}"
