"""One Retrieve Predictions fills every task, in a project as Label Studio creates it and with
each setting a team changes: "Use predictions to prelabel tasks" on (Label Studio's default) or
off, the deprecated "retrieve predictions when loading tasks", "Use for interactive
preannotations" on, and a second ML backend connected after ours.

Every task is late (no worker runs during the Retrieve), so each prediction is written by a
worker. Label Studio calls a backend's ``/predict`` synchronously when some of its reads meet a
task without predictions; a worker reading the task it is about to write would make Label Studio
wait on the very job that worker is finishing (one task a minute). So besides one prediction per
task, with no second click and nothing logged by Label Studio, the backend must see exactly one
``/predict`` per Retrieve: none caused by the workers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from redis import Redis

from tests.e2e.stack import BASIC_AUTH, Stack, backend_stack, connect, import_tasks, metrics
from tests.e2e.stack import retrieve as retrieve_predictions
from tests.ls_reference import check_regions
from tests.servers import ReplyHandler, threaded_servers, wait_for

pytestmark = pytest.mark.e2e

SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "label studio defaults": {},
    "prelabel off": {"project": {"show_collab_predictions": False}},
    "predictions retrieved when tasks load": {
        "project": {"evaluate_predictions_automatically": True}
    },
    "interactive on": {"connection": {"is_interactive": True}},
    "a second backend connected": {"second_backend": {}},
}


@dataclass
class OtherBackend:
    """Another team's ML backend: answers every task with an empty prediction list."""

    url: str = ""
    calls: list[str] = field(default_factory=list)


class _OtherHandler(ReplyHandler):
    server: _OtherServer

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.state.calls.append(self.path)
        self._json({"status": "UP", "model_class": "Other"})

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        self.server.state.calls.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.startswith("/predict"):
            return self._json({"results": [[] for _ in body.get("tasks", [])]})
        self._json({"model_version": "other-model-1"})

    def _json(self, body: dict[str, Any]) -> None:
        self._send(200, json.dumps(body).encode(), "application/json")


class _OtherServer(ThreadingHTTPServer):
    state: OtherBackend


@pytest.fixture(scope="module")
def other_backend() -> Iterator[OtherBackend]:
    with threaded_servers() as run:
        server = _OtherServer(("127.0.0.1", 0), _OtherHandler)
        server.state = OtherBackend(f"http://127.0.0.1:{server.server_address[1]}")
        run(server)
        yield server.state


@pytest.fixture(scope="module")
def stack(label_studio, tiny_env, tmp_path_factory) -> Iterator[Stack]:
    """A backend that waits 0.2 s for jobs, and no worker until a test starts one."""
    tmp = tmp_path_factory.mktemp("settings-stack")
    with backend_stack(label_studio, tiny_env, tmp, wait_s="0.2", worker=False) as running:
        yield running


def _predict_calls(stack: Stack) -> float:
    requests = metrics(stack.url, BASIC_AUTH)
    return sum(
        value
        for (name, labels), value in requests.items()
        if name == "zerolabel_http_requests_total" and "/predict" in labels.split(",")
    )


def _project(ls, name: str, setting: dict[str, Any], stack: Stack, other: OtherBackend) -> int:
    project = ls.create_project(f"settings: {name}")
    if "project" in setting:
        ls.api("PATCH", f"/api/projects/{project}", json=setting["project"])
    import_tasks(ls, project)
    connect(ls, project, stack.url, **setting.get("connection", {}))
    if "second_backend" in setting:
        second = {"project": project, "url": other.url, "title": "another team's model"}
        ls.api("POST", "/api/ml", json=second)
    return project


def test_one_retrieve_fills_every_task_whatever_the_project_settings(
    label_studio, stack: Stack, other_backend: OtherBackend
):
    ls = label_studio
    assert ls.log is not None
    projects = {
        name: _project(ls, name, setting, stack, other_backend)
        for name, setting in SETTINGS.items()
    }
    assert ls.api("GET", f"/api/projects/{projects['label studio defaults']}").json()[
        "show_collab_predictions"
    ]  # Label Studio's default: prelabeling on
    tasks = {
        name: [t["id"] for t in ls.api("GET", f"/api/tasks?project={p}").json()["tasks"]]
        for name, p in projects.items()
        if name != "predictions retrieved when tasks load"  # this read would ask for them
    }
    logged = ls.log.stat().st_size
    before = _predict_calls(stack)
    for project in projects.values():  # one click each; no worker yet: every task is late
        retrieve_predictions(ls, project)
    assert _predict_calls(stack) - before == len(projects)
    assert all(ls.predictions(project) == [] for project in projects.values())

    stack.start_worker()
    expected = {name: 4 for name in projects}
    wait_for(
        lambda: {n: len(ls.predictions(p)) for n, p in projects.items()} == expected,
        240,
        "every late task's prediction",
    )
    redis = Redis.from_url(stack.redis_url)
    wait_for(lambda: not redis.keys("zerolabel:waiting:*"), 60, "the last deliveries")

    for name, project in projects.items():
        predictions = ls.predictions(project)
        counts = Counter(p["task"] for p in predictions)
        assert set(counts.values()) == {1}, name  # one prediction per task
        if name in tasks:
            assert set(counts) == set(tasks[name]), name
        for prediction in predictions:
            assert prediction["model_version"].startswith("zerolabel-"), name
            check_regions(prediction["result"])
    # No /predict but the clicks: the workers' reads never made Label Studio call the backend.
    assert _predict_calls(stack) - before == len(projects)
    for project in projects.values():  # asking again adds nothing
        retrieve_predictions(ls, project)
    assert all(len(ls.predictions(p)) == 4 for p in projects.values())
    output = ls.log.read_bytes()[logged:].decode(errors="replace")
    complaints = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
    assert complaints == []
    assert not [call for call in other_backend.calls if call.startswith("/predict")]
