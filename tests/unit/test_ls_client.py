"""LabelStudioClient against a fake Label Studio on 127.0.0.1: auth, pagination, errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from zerolabel.errors import LabelStudioError
from zerolabel.labelstudio.auth import ACCESS_TOKEN_TTL_S, is_personal_access_token
from zerolabel.labelstudio.client import LabelStudioClient

from tests.servers import ReplyHandler

LEGACY = "0123456789abcdef0123456789abcdef01234567"
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCIsImp0aSI6IjEifQ.c2lnbmF0dXJlLXBhdA"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any
    ids: list[str] = field(default_factory=list)  # every ``ids[]`` of the query


@dataclass
class FakeLabelStudio:
    """What the fake serves and what it saw."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    claimed_total: int | None = None  # "total" to report instead of len(tasks)
    access_tokens: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)  # access tokens answered with 401
    busy: int = 0  # answer 503 this many times
    echo_token: bool = False  # put the Authorization header into 400 replies

    def api_calls(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]


class Handler(ReplyHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length)) if length else None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ids = parse_qs(parts.query).get("ids[]", [])
        call = Call(self.command, parts.path, query, self.headers.get("Authorization"), body, ids)
        state.calls.append(call)
        if parts.path == "/api/token/refresh/":
            return self._exchange(state, body)
        if not self._authorized(state, call.authorization):
            return self._json(401, {"status_code": 401, "detail": "Invalid token."})
        if state.busy > 0:
            state.busy -= 1
            return self._json(503, {"detail": "busy"})
        self._route(state, call)

    def _exchange(self, state: FakeLabelStudio, body: Any) -> None:
        if body.get("refresh") != PAT:
            return self._json(401, {"detail": "Token is invalid", "code": "token_not_valid"})
        access = f"access-{len(state.access_tokens) + 1}"
        state.access_tokens.append(access)
        self._json(200, {"access": access})

    def _authorized(self, state: FakeLabelStudio, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme == "Token":
            return token == LEGACY
        return scheme == "Bearer" and token in state.access_tokens and token not in state.revoked

    def _route(self, state: FakeLabelStudio, call: Call) -> None:
        if call.path == "/api/tasks":
            return self._tasks(state, call.query)
        if call.path == "/api/projects/1" and call.method == "GET":
            return self._json(200, {"id": 1, "label_config": "<View/>"})
        if call.path == "/api/projects/1" and call.method == "PATCH":
            return self._json(200, {"id": 1, **call.body})
        if call.path == "/api/predictions" and call.method == "POST":
            if call.body["task"] == 999:
                detail = {"task": ['Invalid pk "999" - object does not exist.']}
                if state.echo_token:
                    detail["auth"] = [call.authorization or ""]
                reply = {"detail": "Validation error", "validation_errors": detail}
                return self._json(400, reply)
            return self._json(201, {"id": 7, **call.body})
        if call.path == "/api/predictions/7":
            return self._json(200, {"id": 7, **call.body})
        if call.path == "/api/predictions":
            return self._json(200, [{"id": 7, "task": 1}])
        if call.path in ("/api/projects/1/export", "/api/projects/2/export"):
            return self._json(200, [{"id": 1}])
        if call.path == "/html":
            return self._send(200, b"<html>login</html>", "text/html")
        self._json(404, {"detail": "No Project matches the given query."})

    def _tasks(self, state: FakeLabelStudio, query: dict[str, str]) -> None:
        page, size = int(query["page"]), int(query["page_size"])
        total = len(state.tasks) if state.claimed_total is None else state.claimed_total
        if page > 1 and (page - 1) * size >= len(state.tasks):
            return self._json(404, {"detail": "Invalid page."})
        chunk = state.tasks[(page - 1) * size : page * size]
        self._json(200, {"total": total, "total_predictions": 0, "tasks": chunk})

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")


class _Server(ThreadingHTTPServer):
    state: FakeLabelStudio


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    server = _Server(("127.0.0.1", 0), Handler)
    server.state = FakeLabelStudio(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _client(fake: FakeLabelStudio, token: str, **kwargs: Any) -> LabelStudioClient:
    kwargs.setdefault("sleep", lambda _s: None)
    return LabelStudioClient(fake.url, token, timeout_s=5, **kwargs)


# --- authentication ----------------------------------------------------------------------


def test_tokens_are_told_apart():
    assert is_personal_access_token(PAT)
    assert not is_personal_access_token(LEGACY)


def test_legacy_token_is_sent_as_token_and_never_exchanged(fake_ls):
    with _client(fake_ls, LEGACY) as client:
        assert client.label_config(1) == "<View/>"
    assert [c.authorization for c in fake_ls.calls] == [f"Token {LEGACY}"]
    assert not fake_ls.api_calls("/api/token/refresh/")


def test_pat_is_exchanged_once_and_the_access_token_reused(fake_ls):
    clock = FakeClock()
    with _client(fake_ls, PAT, clock=clock) as client:
        client.project(1)
        client.project(1)
        clock.now += ACCESS_TOKEN_TTL_S + 1
        client.project(1)
    exchanges = fake_ls.api_calls("/api/token/refresh/")
    assert [c.body for c in exchanges] == [{"refresh": PAT}] * 2
    assert [c.authorization for c in fake_ls.api_calls("/api/projects/1")] == [
        "Bearer access-1",
        "Bearer access-1",
        "Bearer access-2",
    ]
    assert all(PAT not in (c.authorization or "") for c in fake_ls.calls)


def test_a_refused_access_token_is_exchanged_again_once(fake_ls):
    with _client(fake_ls, PAT) as client:
        client.project(1)
        fake_ls.revoked.add("access-1")
        assert client.project(1)["id"] == 1
    assert len(fake_ls.api_calls("/api/token/refresh/")) == 2
    assert fake_ls.api_calls("/api/projects/1")[-1].authorization == "Bearer access-2"


def test_an_access_token_refused_twice_gives_401_with_a_hint(fake_ls):
    with _client(fake_ls, PAT) as client:
        client.project(1)
        fake_ls.revoked.update({"access-1", "access-2"})
        with pytest.raises(LabelStudioError) as caught:
            client.project(1)
    assert caught.value.status == 401
    assert "personal access token was refused" in str(caught.value)
    assert len(fake_ls.api_calls("/api/token/refresh/")) == 2  # no loop


def test_a_refused_pat_names_the_exchange_not_the_token(fake_ls):
    bad = PAT[:-4] + "XXXX"
    with pytest.raises(LabelStudioError) as caught, _client(fake_ls, bad) as client:
        client.project(1)
    error = caught.value
    assert (error.status, error.method, error.path) == (401, "POST", "/api/token/refresh/")
    assert "refused the personal access token" in str(error) and "Token is invalid" in str(error)
    assert bad not in str(error) and bad not in repr(client)


def test_a_refused_legacy_token_says_so_without_the_token(fake_ls):
    wrong = "f" * 40
    with pytest.raises(LabelStudioError) as caught, _client(fake_ls, wrong) as client:
        client.project(1)
    assert caught.value.status == 401
    assert "Invalid token." in str(caught.value) and "legacy token was refused" in str(caught.value)
    assert wrong not in str(caught.value)


# --- pagination --------------------------------------------------------------------------


def _tasks(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "data": {"image": f"/data/upload/1/{i}.png"}, "predictions": []}
        for i in range(1, n + 1)
    ]


@pytest.mark.parametrize(
    ("count", "page_size", "pages"),
    [
        pytest.param(5, 2, 3, id="short-last-page"),
        pytest.param(4, 2, 2, id="exact-multiple-stops-on-total"),
        pytest.param(3, 100, 1, id="one-page"),
        pytest.param(0, 100, 1, id="empty-project"),
    ],
)
def test_tasks_walks_every_page_once(fake_ls, count, page_size, pages):
    fake_ls.tasks = _tasks(count)
    with _client(fake_ls, LEGACY) as client:
        ids = [task["id"] for task in client.tasks(1, page_size=page_size)]
    assert ids == list(range(1, count + 1))
    calls = fake_ls.api_calls("/api/tasks")
    assert [c.query["page"] for c in calls] == [str(p) for p in range(1, pages + 1)]
    assert all(c.query["fields"] == "all" and c.query["project"] == "1" for c in calls)


def test_tasks_stops_at_invalid_page_when_tasks_vanish(fake_ls):
    fake_ls.tasks, fake_ls.claimed_total = _tasks(4), 6  # two deleted while we read
    with _client(fake_ls, LEGACY) as client:
        assert [t["id"] for t in client.tasks(1, page_size=2)] == [1, 2, 3, 4]
    assert len(fake_ls.api_calls("/api/tasks")) == 3  # the third answered 404 "Invalid page."


def test_tasks_rejects_a_bad_page_size(fake_ls):
    with _client(fake_ls, LEGACY) as client, pytest.raises(ValueError, match="page_size"):
        next(client.tasks(1, page_size=0))


# --- calls and bodies --------------------------------------------------------------------


def test_calls_send_what_label_studio_expects(fake_ls):
    result = [{"type": "rectanglelabels", "value": {"x": 1}}]
    with _client(fake_ls, LEGACY) as client:
        created = client.create_prediction(3, result, 0.5, "zerolabel-v")
        client.create_prediction(4, result, 0.5, "zerolabel-v", project=2)
        assert client.project_tasks(2, [4, 5]) == [{"id": 1}]
        client.update_prediction(7, [])
        client.set_label_config(1, "<View><Image/></View>")
        assert client.predictions(1) == [{"id": 7, "task": 1}]
        client.predictions(task_id=3)
        assert client.export(1) == [{"id": 1}]
    assert created["id"] == 7
    post, with_project, read, patch, config, by_project, by_task, export = fake_ls.calls
    assert (post.method, post.path) == ("POST", "/api/predictions")
    assert post.body == {"task": 3, "result": result, "score": 0.5, "model_version": "zerolabel-v"}
    assert with_project.body == {**post.body, "task": 4, "project": 2}
    # a task read that never makes Label Studio call an ML backend: the project's export
    assert (read.method, read.path) == ("GET", "/api/projects/2/export")
    assert read.query == {"exportType": "JSON", "download_all_tasks": "true", "ids[]": "4"}
    assert read.ids == ["4", "5"]
    assert (patch.method, patch.path, patch.body) == ("PATCH", "/api/predictions/7", {"result": []})
    assert (config.method, config.body) == ("PATCH", {"label_config": "<View><Image/></View>"})
    assert by_project.query == {"project": "1"} and by_task.query == {"task": "3"}
    assert export.query == {"exportType": "JSON", "download_all_tasks": "true"}


# --- errors ------------------------------------------------------------------------------


def test_errors_carry_status_method_path_and_label_studios_message(fake_ls):
    with _client(fake_ls, LEGACY) as client, pytest.raises(LabelStudioError) as caught:
        client.project(99)
    error = caught.value
    assert (error.status, error.method, error.path) == (404, "GET", "/api/projects/99")
    assert str(error) == (
        "Label Studio GET /api/projects/99: HTTP 404: No Project matches the given query."
    )


@pytest.mark.parametrize("token", [LEGACY, PAT], ids=["legacy", "pat"])
def test_validation_errors_are_shown_and_tokens_scrubbed(fake_ls, token):
    fake_ls.echo_token = True  # the reply quotes the Authorization header back
    with _client(fake_ls, token) as client, pytest.raises(LabelStudioError) as caught:
        client.create_prediction(999, [], 0.0, "v")
    message = str(caught.value)
    assert caught.value.status == 400
    assert 'Validation error (task: Invalid pk "999" - object does not exist.; auth: ' in message
    assert token not in message and "access-1" not in message and "<token>" in message


def test_transient_errors_are_retried_for_reads_only(fake_ls):
    sleeps: list[float] = []
    with _client(fake_ls, LEGACY, sleep=sleeps.append) as client:
        fake_ls.busy = 2
        assert client.project(1)["id"] == 1
        fake_ls.busy = 1
        with pytest.raises(LabelStudioError) as caught:
            client.create_prediction(3, [], 0.0, "v")
    assert caught.value.status == 503
    assert len(fake_ls.api_calls("/api/projects/1")) == 3 and sleeps == [0.5, 1.0]
    assert len(fake_ls.api_calls("/api/predictions")) == 1  # a POST is never repeated


def test_no_server_gives_an_error_without_status(fake_ls):
    client = LabelStudioClient("http://127.0.0.1:9", LEGACY, timeout_s=2, retries=0)
    with client, pytest.raises(LabelStudioError) as caught:
        client.project(1)
    assert caught.value.status is None and "request failed" in str(caught.value)


def test_a_reply_that_is_not_json_is_an_error(fake_ls):
    with _client(fake_ls, LEGACY) as client, pytest.raises(LabelStudioError, match="not JSON"):
        client.request("GET", "/html")


@pytest.mark.parametrize(
    ("url", "token"),
    [("127.0.0.1:8080", LEGACY), ("ftp://host", LEGACY), ("http://host", "")],
    ids=["no-scheme", "bad-scheme", "no-token"],
)
def test_bad_arguments_are_refused(url, token):
    with pytest.raises(ValueError):
        LabelStudioClient(url, token)
