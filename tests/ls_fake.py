"""A fake Label Studio for write-back tests: task images, the predictions API and the project
export the worker reads tasks through, one token."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.servers import ReplyHandler, threaded_servers


def png(size: tuple[int, int] = (8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class FakeLabelStudio:
    """What the server holds and every request it received.

    Attributes:
        token: what ``Authorization: Token <token>`` must carry everywhere.
        images: path -> image bytes, served under ``/data/``.
        tasks: task id -> its data, served at ``/api/tasks/<id>`` and in its project's export.
        task_projects: task id -> its project; tasks not listed are in ``project``.
        project: the project of tasks not in ``task_projects``.
        predictions: stored predictions, with ``id`` and ``task``.
        seen: (method, path with query, Authorization header) of every request.
        post_faults: what the next POSTs do instead of storing: an HTTP status, or "lost"
            (stored, then the connection is closed without a reply).
        lookup_delay_s: pause before answering a read of predictions (``GET /api/predictions``
            or a project's export) (to overlap callers).
    """

    url: str = ""
    token: str = ""
    images: dict[str, bytes] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    task_projects: dict[int, int] = field(default_factory=dict)
    project: int = 1
    predictions: list[dict[str, Any]] = field(default_factory=list)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    post_faults: list[int | str] = field(default_factory=list)
    lookup_delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def exported(self, project: int, ids: list[str]) -> list[dict[str, Any]]:
        """The project's tasks of these ids as Label Studio's JSON export lists them."""
        found = []
        with self.lock:
            for task_id, data in self.tasks.items():
                if str(task_id) in ids and self.task_projects.get(task_id, self.project) == project:
                    predictions = [p for p in self.predictions if p["task"] == task_id]
                    found.append(
                        {
                            "id": task_id,
                            "project": project,
                            "data": data,
                            "predictions": predictions,
                        }
                    )
        return found

    def per_task(self) -> dict[int, int]:
        """How many predictions each task has."""
        counts: dict[int, int] = {}
        for prediction in self.predictions:
            counts[prediction["task"]] = counts.get(prediction["task"], 0) + 1
        return counts


class _Handler(ReplyHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state = self._record()
        if state is None:
            return
        parts = urlsplit(self.path)
        if parts.path.startswith("/data/"):
            body = state.images.get(self.path)
            if body is None:
                return self._reply(404, {"detail": "not found"})
            kind = "image/jpeg" if parts.path.endswith(".jpg") else "image/png"
            return self._send(200, body, kind)
        if parts.path.startswith("/api/tasks/"):
            data = state.tasks.get(int(parts.path.removeprefix("/api/tasks/").strip("/") or -1))
            if data is None:
                return self._reply(404, {"detail": "Not found."})
            return self._reply(200, {"id": int(parts.path.split("/")[3]), "data": data})
        export = re.fullmatch(r"/api/projects/(\d+)/export/?", parts.path)
        if export:
            time.sleep(state.lookup_delay_s)
            ids = parse_qs(parts.query).get("ids[]", [])
            return self._reply(200, state.exported(int(export.group(1)), ids))
        if parts.path == "/api/predictions":
            time.sleep(state.lookup_delay_s)
            task = parse_qs(parts.query).get("task", [""])[0]
            with state.lock:
                found = [p for p in state.predictions if str(p["task"]) == task]
            return self._reply(200, found)
        self._reply(404, {"detail": "not found"})

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        state = self._record()
        if state is None:
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if urlsplit(self.path).path != "/api/predictions":
            return self._reply(404, {"detail": "not found"})
        with state.lock:
            fault = state.post_faults.pop(0) if state.post_faults else None
            if isinstance(fault, int):
                return self._reply(fault, {"detail": "unavailable"})
            stored = {**body, "id": len(state.predictions) + 1}
            state.predictions.append(stored)
        if fault == "lost":
            self.close_connection = True
            return
        self._reply(201, stored)

    def _record(self) -> FakeLabelStudio | None:
        state = self.server.state
        auth = self.headers.get("Authorization")
        state.seen.append((self.command, self.path, auth))
        if auth != f"Token {state.token}":
            self._reply(401, {"detail": "Authentication credentials were not provided."})
            return None
        return state

    def _reply(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")


class _Server(ThreadingHTTPServer):
    state: FakeLabelStudio


@contextmanager
def fake_label_studios(token: str) -> Iterator[Callable[[], FakeLabelStudio]]:
    """Yields ``start()``: a new fake Label Studio on 127.0.0.1; all stopped on exit."""
    with threaded_servers() as run:

        def start() -> FakeLabelStudio:
            server = _Server(("127.0.0.1", 0), _Handler)
            server.state = FakeLabelStudio(f"http://127.0.0.1:{server.server_address[1]}", token)
            run(server)
            return server.state

        yield start
