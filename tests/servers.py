"""Real processes for integration and end-to-end tests, all bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(poll_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisServer:
    """A throw-away redis-server on a fixed 127.0.0.1 port that can be stopped and started again.

    With ``appendonly`` it keeps an append-only file in ``tmp``, so queued jobs survive a restart.
    """

    def __init__(self, tmp: Path, *, appendonly: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.tmp = tmp
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        assert self.binary is not None
        self.process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from redis import Redis

        wait_for(lambda: Redis.from_url(self.url).ping(), 10, "redis-server")
        return self.process

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits."""
        if self.process is not None:
            stop(self.process)


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throw-away redis-server; yields its URL and process."""
    server = RedisServer(tmp)
    try:
        yield server.url, server.start()
    finally:
        server.stop()


def start_worker(
    env: dict[str, str], log: Path, name: str | None = None, *, module: str = "zerolabel.cli.main"
) -> subprocess.Popen[bytes]:
    """``zerolabel worker`` (``--name`` when given) in its own process, output to ``log``.

    ``module`` runs another entry point (``tests.fault_worker``: a worker that also runs the
    functions of :mod:`tests.fault_jobs`).
    """
    named = ["--name", name] if name else []
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, "worker", *named],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_backend(
    env: dict[str, str], port: int, *, quiet: bool = False
) -> subprocess.Popen[bytes]:
    """The ML backend (``python -m zerolabel_backend``) on 127.0.0.1:``port``, ``env`` over this
    process's environment; its standard output is discarded, its errors too when ``quiet``."""
    return subprocess.Popen(
        [sys.executable, "-m", "zerolabel_backend", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if quiet else None,
    )


def wait_for_workers(redis_url: str, count: int, timeout_s: float = 60) -> None:
    from redis import Redis
    from rq import Worker

    connection = Redis.from_url(redis_url)
    wait_for(lambda: len(Worker.all(connection=connection)) >= count, timeout_s, "RQ worker")


class ReplyHandler(BaseHTTPRequestHandler):
    """Base of the tests' fake servers: logs nothing, sends whole replies with ``_send``."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietHandler(SimpleHTTPRequestHandler):
    delays: dict[str, float] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        path = self.path.split("?")[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        delay = self.delays.pop(path, 0.0)
        if delay:
            time.sleep(delay)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def image_server(folder: Path) -> Iterator[tuple[str, type[_QuietHandler]]]:
    """Serves ``folder`` over HTTP; the handler class records hits and injects delays."""
    handler = type("Handler", (_QuietHandler,), {"delays": {}, "hits": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def redis_contents(redis: Redis) -> list[bytes]:
    """Every key and every value held in Redis, zlib-compressed values (RQ job data) unpacked."""
    found: list[bytes] = []
    for key in redis.scan_iter(count=1000):
        found.append(key)
        kind = redis.type(key).decode()
        if kind == "string":
            found.append(redis.get(key) or b"")
        elif kind == "hash":
            for field, value in redis.hgetall(key).items():
                found += [field, value]
        elif kind == "list":
            found += redis.lrange(key, 0, -1)
        elif kind == "set":
            found += list(redis.smembers(key))
        elif kind == "zset":
            found += [member for member, _ in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, entry in redis.xrange(key):
                for field, value in entry.items():
                    found += [field, value]
        else:
            found.append(redis.dump(key) or b"")
    unpacked = []
    for value in found:
        with contextlib.suppress(zlib.error):
            unpacked.append(zlib.decompress(value))
    return found + unpacked


@contextlib.contextmanager
def threaded_servers() -> Iterator[Callable[..., ThreadingHTTPServer]]:
    """Serve fake HTTP servers in threads; every one started is stopped on exit.

    Yields ``run(server, before_stop=None)``, which starts ``server`` and returns it;
    ``before_stop`` is called first at shutdown (to release handlers that are holding a reply).
    """
    running: list[tuple[ThreadingHTTPServer, threading.Thread, Callable[[], object] | None]] = []

    def run(
        server: ThreadingHTTPServer, before_stop: Callable[[], object] | None = None
    ) -> ThreadingHTTPServer:
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        running.append((server, thread, before_stop))
        return server

    try:
        yield run
    finally:
        for server, thread, before_stop in running:
            if before_stop is not None:
                before_stop()
            server.shutdown()
            server.server_close()
            thread.join()
