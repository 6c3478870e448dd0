"""``prelabel_project`` against a real Label Studio, Redis and a worker: interrupted, resumed."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from zerolabel.labelstudio.client import LabelStudioClient
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.loop.prelabel import PrelabelReport, prelabel_project
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

from tests.ls_reference import check_regions
from tests.servers import ROOT, redis_server, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.e2e

VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
UPLOADS = ("000002.jpg", "000003.jpg", "000005.jpg", "000006.jpg")
LOCAL = ("000007.jpg", "000008.jpg")
WAIT_S = 300.0  # per batch; generous, CI shares the cores


@dataclass
class Stack:
    service: PredictionService
    worker_log: Path


@pytest.fixture(scope="module")
def stack(label_studio, tiny_env, tmp_path_factory) -> Iterator[Stack]:
    """redis-server and one worker as real processes; the service that queues to them.

    The worker downloads images with its own LABEL_STUDIO_API_KEY, never the CLI's token."""
    tmp = tmp_path_factory.mktemp("prelabel-stack")
    with redis_server(tmp) as (redis_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
        }
        worker = start_worker(env, tmp / "worker.log")
        try:
            wait_for_workers(redis_url, 1, timeout_s=120)
            yield Stack(PredictionService(BackendSettings.from_env(env)), tmp / "worker.log")
        finally:
            stop(worker)


@pytest.fixture(scope="module")
def project(label_studio) -> int:
    """A project with the example config, 4 uploaded and 2 local-file images."""
    ls = label_studio
    project = ls.api("POST", "/api/projects", json={"title": "prelabel", "label_config": CONFIG})
    project_id = int(project.json()["id"])
    for name in UPLOADS:
        with (VOC / name).open("rb") as handle:
            ls.api("POST", f"/api/projects/{project_id}/import", files={"file": (name, handle)})
    folder = ls.document_root / "prelabel"
    folder.mkdir(exist_ok=True)
    for name in LOCAL:
        shutil.copy(VOC / name, folder / name)
    storage = {"project": project_id, "path": str(folder), "use_blob_urls": True, "title": "pl"}
    ls.api("POST", "/api/storages/localfiles", json=storage)
    tasks = [{"data": {"image": f"/data/local-files/?d=prelabel/{name}"}} for name in LOCAL]
    ls.api("POST", f"/api/projects/{project_id}/import", json=tasks)
    return project_id


class InterruptingClient(LabelStudioClient):
    """Stores ``allowed`` predictions, then acts as if Ctrl-C came before the next one."""

    def __init__(self, url: str, token: str, allowed: int) -> None:
        super().__init__(url, token, timeout_s=120)
        self.allowed = allowed

    def create_prediction(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.allowed == 0:
            raise KeyboardInterrupt
        self.allowed -= 1
        return super().create_prediction(*args, **kwargs)


def _personal_access_token(ls) -> str | None:
    """A new personal access token, or None when the user already holds one."""
    reply = ls.api("GET", "/api/token/").json()
    if reply:
        return None
    return str(ls.api("POST", "/api/token/").json()["token"])


def _run(client: LabelStudioClient, project: int, service: PredictionService) -> PrelabelReport:
    return prelabel_project(
        client, project, service, batch_size=2, wait_timeout_s=WAIT_S, progress=False
    )


def test_interrupted_prelabel_resumes_and_writes_each_task_once(label_studio, stack, project):
    ls, service = label_studio, stack.service
    version = service.model_version(CONFIG, ProjectOptions())
    token = _personal_access_token(ls) or ls.token  # the CLI's token; workers use their own
    with InterruptingClient(ls.url, token, allowed=3) as client, pytest.raises(KeyboardInterrupt):
        prelabel_project(client, project, service, batch_size=2, wait_timeout_s=WAIT_S)
    with LabelStudioClient(ls.url, ls.token, timeout_s=120) as client:
        first = Counter(p["task"] for p in client.predictions(project))
        assert len(first) == 3 and set(first.values()) == {1}

        report = _run(client, project, service)
        assert (report.total, report.skipped_existing, report.written) == (6, 3, 3)
        assert report.failed == [] and report.complete, report.summary()
        assert report.model_version == version and "3 written" in report.summary()

        tasks = list(client.tasks(project))
        predictions = client.predictions(project)
        assert Counter(p["task"] for p in predictions) == Counter({t["id"]: 1 for t in tasks})
        for prediction in predictions:
            assert prediction["model_version"] == version
            check_regions(prediction["result"])

        again = _run(client, project, service)
        assert (again.written, again.skipped_existing, again.failed) == (0, 6, [])
        assert len(client.predictions(project)) == len(tasks)
    log = stack.worker_log.read_text()
    assert token not in log and ls.token not in log, "a token leaked into the worker log"
