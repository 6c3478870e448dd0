"""A backend stack beside the real Label Studio: redis-server, workers and ``zerolabel serve``,
as real processes, and the Label Studio calls the end-to-end tests make on it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from tests.servers import (
    ROOT,
    free_port,
    redis_contents,
    redis_server,
    start_worker,
    stop,
    wait_for,
    wait_for_workers,
)

VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
UPLOADS = ("000001.jpg", "000004.jpg")
LOCAL = ("000032.jpg", "000033.jpg")
BASIC_AUTH = ("labelstudio", "connect-model-password")


@dataclass
class Stack:
    """A running backend (``url``) with its Redis and workers; ``env`` starts more workers."""

    url: str
    redis_url: str
    env: dict[str, str]
    tmp: Path
    metrics_port: int  # of the stack's worker (each stack here runs one)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> None:
        self.workers.append(start_worker(self.env, self.tmp / "worker.log"))
        wait_for_workers(self.redis_url, len(self.workers))


@contextlib.contextmanager
def backend_stack(ls, tiny_env, tmp: Path, *, wait_s: str, worker: bool = True) -> Iterator[Stack]:
    """redis-server, a worker (unless ``worker`` is false) and the backend (``zerolabel serve``,
    basic auth on), as real processes. Workers download with their own key and write late
    predictions with it; the token /setup sends is never used. On exit: no token was stored in
    Redis or written to the logs."""
    port = free_port()
    with redis_server(tmp) as (redis_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_WAIT_TIMEOUT_S": wait_s,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "BASIC_AUTH_USER": BASIC_AUTH[0],
            "BASIC_AUTH_PASS": BASIC_AUTH[1],
            "ZEROLABEL_REQUIRE_BASIC_AUTH": "true",
        }
        stack = Stack(f"http://127.0.0.1:{port}", redis_url, env, tmp, free_port())
        env["ZEROLABEL_METRICS_PORT"] = str(stack.metrics_port)
        if worker:
            stack.workers.append(start_worker(env, tmp / "worker.log"))
        with (tmp / "backend.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "zerolabel.cli.main", "serve", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if worker:
                wait_for_workers(redis_url, 1)
            wait_for(lambda: requests.get(f"{stack.url}/health", timeout=2).ok, 60, "backend")
            yield stack
            stored = b"".join(redis_contents(Redis.from_url(redis_url)))
            assert ls.token.encode() not in stored, "a token was stored in Redis"
        finally:
            stop(server)
            for process in stack.workers:
                stop(process)
        logs = [tmp / "backend.log", tmp / "worker.log"]
        text = "".join(path.read_text() for path in logs if path.exists())
        assert ls.token not in text, "a token leaked into the logs"


def import_tasks(ls, project: int) -> None:
    """Two uploads (``/data/upload/<project>/<hash>-name.jpg``) and two local files."""
    for name in UPLOADS:
        with (VOC / name).open("rb") as handle:
            ls.api("POST", f"/api/projects/{project}/import", files={"file": (name, handle)})
    folder = ls.document_root / "set1"
    folder.mkdir(exist_ok=True)
    for name in LOCAL:
        (folder / name).write_bytes((VOC / name).read_bytes())
    ls.add_local_storage(project, folder)
    tasks = [{"data": {"image": f"/data/local-files/?d=set1/{name}"}} for name in LOCAL]
    ls.api("POST", f"/api/projects/{project}/import", json=tasks)


def retrieve(ls, project: int) -> None:
    """The Data Manager's Actions > Retrieve Predictions on every task of the project."""
    ls.api(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        json={"selectedItems": {"all": True, "excluded": []}},
    )


def metrics(url: str, auth: tuple[str, str] | None = None) -> dict[tuple[str, str], float]:
    """Samples of a /metrics page by (name, label values), parsed as Prometheus parses it."""
    reply = requests.get(f"{url}/metrics", timeout=10, auth=auth)
    assert reply.status_code == 200
    return {
        (sample.name, ",".join(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def connect(ls, project: int, backend: str, **settings: object) -> tuple[dict, str]:
    """Connect the backend to the project (``settings``: more fields of the connection, e.g.
    ``is_interactive``); its ML backend record and the model_version."""
    connection = {
        "project": project,
        "url": backend,
        "title": "zerolabel",
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": BASIC_AUTH[0],
        "basic_auth_pass": BASIC_AUTH[1],
        **settings,
    }
    ml = ls.api("POST", "/api/ml", json=connection).json()
    version = requests.post(
        f"{backend}/setup",
        timeout=10,
        auth=BASIC_AUTH,
        json={"project": str(project), "schema": CONFIG},
    ).json()["model_version"]
    return ml, version
