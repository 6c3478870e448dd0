"""Label Studio -> our backend -> Redis/RQ -> a worker -> pre-annotations in Label Studio."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from zerolabel.cli.main import main
from zerolabel.labelstudio.brush import brush_rle_decode

from tests.ls_reference import check_regions
from tests.patch_grid import is_patch_aligned, maskcut_frame
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

pytestmark = pytest.mark.e2e

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
def _stack(ls, tiny_env, tmp: Path, *, wait_s: str, worker: bool = True) -> Iterator[Stack]:
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


@pytest.fixture(scope="module")
def backend(label_studio, tiny_env, tmp_path_factory):
    """A stack whose backend waits long enough for every job."""
    tmp = tmp_path_factory.mktemp("e2e-stack")
    with _stack(label_studio, tiny_env, tmp, wait_s="60") as stack:
        yield stack


def _import_tasks(ls, project: int) -> None:
    for name in UPLOADS:  # uploads: /data/upload/<project>/<hash>-name.jpg
        with (VOC / name).open("rb") as handle:
            ls.api("POST", f"/api/projects/{project}/import", files={"file": (name, handle)})
    folder = ls.document_root / "set1"
    folder.mkdir(exist_ok=True)
    for name in LOCAL:
        shutil.copy(VOC / name, folder / name)
    ls.add_local_storage(project, folder)
    tasks = [{"data": {"image": f"/data/local-files/?d=set1/{name}"}} for name in LOCAL]
    ls.api("POST", f"/api/projects/{project}/import", json=tasks)


def _retrieve(ls, project: int) -> None:
    ls.api(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        json={"selectedItems": {"all": True, "excluded": []}},
    )


def _metrics(url: str, auth: tuple[str, str] | None = None) -> dict[tuple[str, str], float]:
    """Samples of a /metrics page by (name, label values), parsed as Prometheus parses it."""
    reply = requests.get(f"{url}/metrics", timeout=10, auth=auth)
    assert reply.status_code == 200
    return {
        (sample.name, ",".join(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def _connect(ls, project: int, backend: str) -> tuple[dict, str]:
    """Connect the backend to the project; its ML backend record and the model_version."""
    connection = {
        "project": project,
        "url": backend,
        "title": "zerolabel",
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": BASIC_AUTH[0],
        "basic_auth_pass": BASIC_AUTH[1],
    }
    ml = ls.api("POST", "/api/ml", json=connection).json()
    version = requests.post(
        f"{backend}/setup",
        timeout=10,
        auth=BASIC_AUTH,
        json={"project": str(project), "schema": CONFIG},
    ).json()["model_version"]
    return ml, version


def test_label_studio_gets_boxes_and_masks_for_every_task(label_studio, backend):
    ls, worker_metrics_port, backend = label_studio, backend.metrics_port, backend.url
    project = ls.create_project("zerolabel e2e")
    _import_tasks(ls, project)
    tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
    assert len(tasks) == len(UPLOADS) + len(LOCAL)
    assert requests.post(f"{backend}/setup", timeout=10, json={}).status_code == 401
    ml, version = _connect(ls, project, backend)

    _retrieve(ls, project)
    predictions = ls.predictions(project)
    assert Counter(p["task"] for p in predictions) == Counter({t["id"]: 1 for t in tasks})
    for prediction in predictions:
        assert prediction["model_version"] == version
        check_regions(prediction["result"])
    answered = _metrics(backend, BASIC_AUTH)
    assert answered["zerolabel_tasks_total", "answered"] == len(tasks)
    assert (
        answered["zerolabel_tasks_total", "late"]
        == answered["zerolabel_tasks_total", "failed"]
        == 0
    )
    assert answered["zerolabel_queue_workers", "zerolabel"] == 1
    run = _metrics(f"http://127.0.0.1:{worker_metrics_port}")
    assert run["zerolabel_worker_images_total", ""] == len(tasks)  # one job per task
    for stage in ("fetch", "decode", "forward", "method"):
        assert run["zerolabel_worker_stage_seconds_count", stage] == len(tasks), stage

    _retrieve(ls, project)  # a second retrieve adds nothing
    assert len(ls.predictions(project)) == len(tasks)
    assert ls.api("GET", f"/api/ml/{ml['id']}").json()["state"] != "ER"


def test_one_retrieve_with_a_short_wait_writes_every_late_task_once(
    label_studio, tiny_env, tmp_path
):
    """/predict answers before any job finished (no worker runs yet): Label Studio stores
    nothing and logs no error; the worker started afterwards writes one prediction per task,
    without another Retrieve Predictions."""
    ls = label_studio
    assert ls.log is not None
    with _stack(ls, tiny_env, tmp_path, wait_s="0.2", worker=False) as stack:
        project = ls.create_project("zerolabel late tasks")
        _import_tasks(ls, project)
        tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
        _, version = _connect(ls, project, stack.url)
        logged = ls.log.stat().st_size
        _retrieve(ls, project)  # every task is late: no worker is running
        assert ls.predictions(project) == []
        stack.start_worker()
        redis = Redis.from_url(stack.redis_url)
        wait_for(lambda: len(ls.predictions(project)) >= len(tasks), 180, "late predictions")
        wait_for(lambda: not redis.keys("zerolabel:waiting:*"), 60, "the last deliveries")
        predictions = ls.predictions(project)
        assert Counter(p["task"] for p in predictions) == Counter({t["id"]: 1 for t in tasks})
        for prediction in predictions:
            assert prediction["model_version"] == version
            check_regions(prediction["result"])
        _retrieve(ls, project)  # asking again adds nothing
        assert len(ls.predictions(project)) == len(tasks)
    output = ls.log.read_bytes()[logged:].decode(errors="replace")
    assert "incorrect prediction" not in output
    errors = [line for line in output.splitlines() if "ERROR" in line and "predict" in line.lower()]
    assert errors == []


def test_predict_cli_output_imports_into_label_studio(label_studio, tiny_env, tmp_path):
    ls = label_studio
    folder = ls.document_root / "cli"
    folder.mkdir(exist_ok=True)
    for name in UPLOADS + LOCAL:
        shutil.copy(VOC / name, folder / name)
    env = {
        **tiny_env,
    }
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "predict",
            str(folder),
            "-m",
            "maskcut",
            "-o",
            str(out),
            "--document-root",
            str(ls.document_root),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    project = ls.create_project("zerolabel cli import")
    ls.add_local_storage(project, folder)
    tasks = json.loads((out / "tasks.json").read_text())
    ls.api("POST", f"/api/projects/{project}/import", json=tasks)
    predictions = ls.predictions(project)
    assert len(predictions) == len(tasks) == 4
    for prediction in predictions:
        check_regions(prediction["result"])
        for region in prediction["result"]:  # MaskCut refines its masks to pixels by default
            if region["type"] == "brushlabels":
                hw = (region["original_height"], region["original_width"])
                mask = brush_rle_decode(region["value"]["rle"], hw)
                assert not is_patch_aligned(mask, maskcut_frame(hw))
    first = ls.api("GET", f"/api/tasks/{predictions[0]['task']}").json()["data"]["image"]
    served = ls.api("GET", first)  # the local-files URL the CLI wrote is served by LS
    assert served.headers["Content-Type"].startswith("image/")
