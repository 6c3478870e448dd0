"""Backend capacity: is /health still answered while /predict calls wait and clients crawl?

Starts a throw-away redis-server and ``zerolabel serve`` (the production server) on 127.0.0.1,
with no worker, so every /predict waits the whole ``ZEROLABEL_WAIT_TIMEOUT_S`` for its job. It
then measures /health and a small /setup while N /predict calls wait and M "slowloris" clients
send their request headers one byte at a time. All traffic stays on loopback and every loop is
bounded. Prints a markdown table. Usage::

    python bench/bench_capacity.py                   # 50 waiting calls, 20 slow clients
    python bench/bench_capacity.py --waiting 100 --slow 40
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import free_port, redis_server, start_backend, stop, wait_for  # noqa: E402

CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
USER, PASSWORD = "bench", "bench-password"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _call(
    url: str, path: str, body: dict[str, object] | None = None, timeout_s: float = 120
) -> float:
    """Seconds until the whole answer of one request arrived."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data, method="POST" if data else "GET")
    request.add_header("Authorization", AUTH)
    request.add_header("Content-Type", "application/json")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        answer.read()
    return time.perf_counter() - start


def _setup(url: str) -> float:
    return _call(
        url,
        "/setup",
        {
            "project": "1.1",
            "schema": CONFIG,
            "hostname": "",
            "access_token": "",
            "extra_params": "",
        },
    )


def _waiting_predict(url: str, index: int, done: list[float]) -> None:
    task = {"id": index, "data": {"image": f"/data/upload/1/bench-{index}.jpg"}}
    body = {"project": "1.1", "label_config": CONFIG, "tasks": [task]}
    done.append(_call(url, "/predict", body))


def _slow_client(port: int, stop_at: float) -> None:
    """Sends a request's headers one byte a second until ``stop_at`` (or the server hangs up)."""
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for byte in head:
            if time.monotonic() >= stop_at:
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # the server closed the connection: it timed the client out
            time.sleep(1.0)


def _latencies(url: str, count: int) -> tuple[list[float], list[float]]:
    health, setup = [], []
    for _ in range(count):
        health.append(_call(url, "/health", timeout_s=60))
        setup.append(_setup(url))
        time.sleep(0.1)
    return health, setup


def _row(name: str, health: list[float], setup: list[float]) -> str:
    def ms(values: list[float], q: float) -> str:
        ordered = sorted(values)
        return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"

    return (
        f"| {name} | {ms(health, 0.5)} | {ms(health, 0.95)} | {max(health) * 1000:.0f} "
        f"| {statistics.median(setup) * 1000:.0f} | {max(setup) * 1000:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=50, help="concurrent waiting /predict calls")
    parser.add_argument("--slow", type=int, default=20, help="clients sending headers slowly")
    parser.add_argument("--wait-s", type=float, default=20.0, help="ZEROLABEL_WAIT_TIMEOUT_S")
    parser.add_argument("--samples", type=int, default=20, help="/health and /setup calls per row")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as (redis_url, _):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": "http://127.0.0.1:9",
            "ZEROLABEL_WAIT_TIMEOUT_S": str(args.wait_s),
            "BASIC_AUTH_USER": USER,
            "BASIC_AUTH_PASS": PASSWORD,
            "ZEROLABEL_LOG_LEVEL": "WARNING",
        }
        server = start_backend(env, port)
        try:
            wait_for(lambda: _call(url, "/health", timeout_s=2) >= 0, 30, "backend")
            idle = _latencies(url, args.samples)

            predicted: list[float] = []
            stop_at = time.monotonic() + args.wait_s
            threads = [
                threading.Thread(target=_waiting_predict, args=(url, i, predicted), daemon=True)
                for i in range(args.waiting)
            ] + [
                threading.Thread(target=_slow_client, args=(port, stop_at), daemon=True)
                for _ in range(args.slow)
            ]
            for thread in threads:
                thread.start()
            time.sleep(2.0)  # every waiting call is in, every slow client has started
            loaded = _latencies(url, args.samples)
            for thread in threads:
                thread.join(args.wait_s + 60)
        finally:
            stop(server)

    load = f"{args.waiting} waiting /predict + {args.slow} slow clients"
    print(f"\n### Backend under load: {load}\n")
    print("| condition | /health p50 ms | p95 | max | /setup p50 ms | max |")
    print("|---|---|---|---|---|---|")
    print(_row("idle", *idle))
    print(_row(load, *loaded))
    answered = len(predicted)
    print(
        f"\n{answered} of {args.waiting} waiting /predict calls answered "
        f"(median {statistics.median(predicted) if predicted else float('nan'):.1f} s; "
        f"each waits up to {args.wait_s:.0f} s for its job, no worker runs)."
    )


if __name__ == "__main__":
    main()
