"""Retries of transient failures (urllib3's Retry as zerolabel mounts it) against a fake server
on 127.0.0.1, and what a failed request's error says."""

from __future__ import annotations

import logging
import socketserver
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest
import requests
from requests.adapters import HTTPAdapter
from zerolabel.errors import ConfigError
from zerolabel.transport import (
    TRANSIENT_STATUSES,
    Retries,
    plain_session,
    root_cause,
    timed_out,
)

from tests.servers import ReplyHandler, threaded_servers


@dataclass
class Busy:
    """What the fake answers and what it saw."""

    url: str = ""
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    busy: int = 0  # /flaky answers 503 this many times


class Handler(ReplyHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        state = self.server.state
        state.seen.append((self.command, self.path))
        if self.path == "/flaky" and state.busy > 0:
            state.busy -= 1
            return self._send(503, b"busy")
        self._send(200 if self.path == "/flaky" else 404, b"{}", "application/json")

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()


class _Server(ThreadingHTTPServer):
    state: Busy


@pytest.fixture
def server() -> Iterator[Busy]:
    with threaded_servers() as run:
        started = _Server(("127.0.0.1", 0), Handler)
        started.state = Busy(url=f"http://127.0.0.1:{started.server_address[1]}")
        run(started)
        yield started.state


def _session(retries: int, backoff_s: float, pauses: list[float]) -> requests.Session:
    retry = Retries.transient(retries, backoff_s, {"GET"}, sleep=pauses.append)
    return plain_session(HTTPAdapter(max_retries=retry))


def _closed_port() -> int:
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as closed:
        return int(closed.server_address[1])  # bound, then closed: nothing listens there


def test_transient_statuses_are_retried_with_doubling_pauses(server):
    server.busy = 2
    pauses: list[float] = []
    with _session(3, 0.5, pauses) as session:
        assert session.get(f"{server.url}/flaky", timeout=5).status_code == 200
    assert [path for _, path in server.seen] == ["/flaky"] * 3 and pauses == [0.5, 1.0]


def test_retries_give_up_with_the_last_reply(server):
    server.busy = 10
    pauses: list[float] = []
    with _session(2, 0.25, pauses) as session:
        assert session.get(f"{server.url}/flaky", timeout=5).status_code == 503
    assert len(server.seen) == 3 and pauses == [0.25, 0.5]


def test_a_permanent_failure_is_not_retried(server):
    pauses: list[float] = []
    with _session(3, 0.5, pauses) as session:
        assert session.get(f"{server.url}/missing", timeout=5).status_code == 404
    assert len(server.seen) == 1 and pauses == []


def test_a_method_not_listed_is_never_sent_twice(server):
    server.busy = 1
    pauses: list[float] = []
    with _session(3, 0.5, pauses) as session:
        assert session.post(f"{server.url}/flaky", json={}, timeout=5).status_code == 503
        with pytest.raises(requests.ConnectionError) as refused:
            session.post(f"http://127.0.0.1:{_closed_port()}/flaky", json={}, timeout=5)
    assert server.seen == [("POST", "/flaky")] and pauses == []
    assert root_cause(refused.value) == "Connection refused" and not timed_out(refused.value)


def test_a_refused_connection_is_retried_for_a_listed_method():
    pauses: list[float] = []
    with _session(2, 0.01, pauses) as session, pytest.raises(requests.ConnectionError) as caught:
        session.get(f"http://127.0.0.1:{_closed_port()}/", timeout=5)
    assert pauses == [0.01, 0.02] and root_cause(caught.value) == "Connection refused"


def test_a_server_that_never_answers_times_out():
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as silent:
        port = silent.server_address[1]  # listening, never accepting: the request waits
        with _session(0, 0.0, []) as session, pytest.raises(requests.RequestException) as caught:
            session.get(f"http://127.0.0.1:{port}/", timeout=0.2)
    assert timed_out(caught.value)


def test_the_transient_statuses():
    assert {408, 425, 429, 500, 502, 503, 504, 599} <= TRANSIENT_STATUSES
    assert not {200, 301, 400, 401, 403, 404, 409, 422} & TRANSIENT_STATUSES


def test_retries_validation(server):
    with _session(0, 0.5, []) as session:
        server.busy = 1
        assert session.get(f"{server.url}/flaky", timeout=5).status_code == 503
    assert len(server.seen) == 1  # no retries: one attempt
    for bad in ({"retries": -1, "backoff_s": 0.5}, {"retries": 1, "backoff_s": -0.1}):
        with pytest.raises(ConfigError, match="Retries"):
            Retries.transient(methods={"GET"}, **bad)


def test_urllib3_retry_lines_lose_their_query_strings(caplog):
    from zerolabel.transport import redact_logs

    redact_logs()
    redact_logs()  # once is enough: no second filter
    library = logging.getLogger("urllib3.connectionpool")
    with caplog.at_level(logging.WARNING, "urllib3"):
        library.warning(
            "Retrying (%r) after connection broken by '%r': %s",
            "Retry(total=1)",
            "ConnectionResetError()",
            "/bucket/a.jpg?X-Amz-Signature=s3cret&X-Amz-Credential=k3y",
        )
    assert "s3cret" not in caplog.text and "k3y" not in caplog.text
    assert "/bucket/a.jpg?<redacted>" in caplog.text
    assert len(library.filters) == 1


def test_log_lines_and_tracebacks_lose_the_user_info_of_urls():
    import io

    from zerolabel.transport import UserInfoRedaction

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(UserInfoRedaction())
    logger = logging.getLogger("zerolabel.test_redaction")
    logger.addHandler(handler)
    try:
        logger.warning("cannot reach %s", "redis://:s3cret@queue:6379/0")
        try:
            raise ConnectionError("redis://user:pa55@queue:6379/0 refused")
        except ConnectionError:
            logger.exception("worker stopped")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "s3cret" not in text and "pa55" not in text and "user:" not in text
    assert "cannot reach redis://queue:6379/0" in text
    assert "ConnectionError: redis://queue:6379/0 refused" in text
