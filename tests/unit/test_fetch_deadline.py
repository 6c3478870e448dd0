"""One deadline per fetch attempt, one budget per fetch, against loopback servers that stall."""

from __future__ import annotations

import io
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from PIL import Image
from zerolabel.errors import TransientFetchError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Pad: " + b"a" * 400 + b"\r\n\r\n"


@dataclass
class Stall:
    """What a stalling server did: connections taken and bytes sent before the client left."""

    connections: int = 0
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


def _trickle(handler: socketserver.StreamRequestHandler, state: Stall) -> None:
    """Response headers one byte every 20 ms (about 9 s for all of them)."""
    for byte in HEADERS:
        if state.stop.wait(0.02):
            return
        try:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
        except OSError:
            return  # the client hung up
        state.sent += 1


def _silent(handler: socketserver.StreamRequestHandler, state: Stall) -> None:
    """Reads the request and never answers."""
    state.stop.wait(10)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _close_delimited(handler: socketserver.StreamRequestHandler, state: Stall) -> None:
    """An HTTP/1.0 reply without a length: the body ends when the server hangs up."""
    handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: image/png\r\n\r\n" + _png())
    state.sent = 1


@pytest.fixture
def stalling() -> Iterator[Callable[[Callable[..., None]], tuple[str, Stall]]]:
    servers: list[tuple[socketserver.ThreadingTCPServer, threading.Thread, Stall]] = []

    def start(behaviour: Callable[..., None]) -> tuple[str, Stall]:
        state = Stall()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                state.connections += 1
                self.rfile.readline()  # the request line is enough
                behaviour(self, state)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append((server, thread, state))
        return f"http://127.0.0.1:{server.server_address[1]}", state

    yield start
    for server, thread, state in servers:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_trickled_headers_fail_at_the_fetch_timeout(stalling):
    url, state = stalling(_trickle)
    with Fetcher(FetchPolicy(url, timeout_s=0.3, retries=0)) as fetcher:
        with pytest.raises(TransientFetchError, match="timed out after 0.3 s"):
            fetcher.fetch(f"{url}/img.png", LIMITS)
    assert state.connections == 1
    assert 0 < state.sent < len(HEADERS)  # gave up long before the headers were complete


def test_a_body_that_ends_when_the_connection_closes_is_read_whole(stalling):
    url, state = stalling(_close_delimited)
    with Fetcher(FetchPolicy(url, timeout_s=2.0, retries=0)) as fetcher:
        image = fetcher.fetch(f"{url}/img.png", LIMITS)
    assert image.original_hw == (3, 5) and state.connections == 1


def test_budget_stops_further_attempts_after_a_timeout(stalling):
    url, state = stalling(_silent)
    policy = FetchPolicy(url, timeout_s=0.3, retries=3, backoff_s=0.01, budget_s=0.3)
    with Fetcher(policy) as fetcher:
        with pytest.raises(TransientFetchError, match="timed out"):
            fetcher.fetch(f"{url}/img.png", LIMITS)
    assert state.connections == 1  # one timeout used the budget: no second attempt


def test_without_a_budget_every_attempt_is_made(stalling):
    url, state = stalling(_silent)
    policy = FetchPolicy(url, timeout_s=0.2, retries=2, backoff_s=0.01)
    with Fetcher(policy) as fetcher:
        with pytest.raises(TransientFetchError, match="gave up after 3 attempts"):
            fetcher.fetch(f"{url}/img.png", LIMITS)
    assert state.connections == 3


def test_budget_leaves_room_for_quick_retries():
    with socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    pauses: list[float] = []
    policy = FetchPolicy(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, budget_s=30)
    refused = Fetcher(policy, sleep=pauses.append)
    with refused, pytest.raises(TransientFetchError, match="gave up after 3 attempts"):
        refused.fetch("/data/upload/1/x.png", LIMITS)
    assert pauses == [0.01, 0.02]


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_s"):
        FetchPolicy(budget_s=0)
