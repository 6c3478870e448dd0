"""Label Studio's "Prediction score" column holds our task scores, after prelabel and after a
Retrieve through the backend, and sorting by it puts the least trusted task first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from zerolabel.labelstudio.client import LabelStudioClient
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.loop.prelabel import prelabel_project
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

from tests.servers import (
    ROOT,
    free_port,
    redis_server,
    start_worker,
    stop,
    wait_for,
    wait_for_workers,
)

pytestmark = pytest.mark.e2e

VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
FIRST = ("000002.jpg", "000005.jpg", "000007.jpg")  # pre-labeled by zerolabel prelabel
LATER = ("000001.jpg", "000004.jpg")  # imported afterwards, predicted by a Retrieve
TITLE = "zerolabel"
REGION_TYPES = ("rectanglelabels", "brushlabels")  # an object is one region: a box or a mask


@dataclass
class Stack:
    service: PredictionService
    backend_url: str


@pytest.fixture(scope="module")
def stack(label_studio, tiny_env, tmp_path_factory) -> Iterator[Stack]:
    """redis-server, one worker and the backend as real processes; the service prelabel uses."""
    tmp = tmp_path_factory.mktemp("score-stack")
    port = free_port()
    with redis_server(tmp) as (redis_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_WAIT_TIMEOUT_S": "120",
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
        }
        worker = start_worker(env, tmp / "worker.log")
        with (tmp / "backend.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "zerolabel.cli.main", "serve", "--port", str(port)],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_workers(redis_url, 1, timeout_s=120)
            wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, 60, "backend")
            yield Stack(PredictionService(BackendSettings.from_env(env)), url)
        finally:
            stop(server)
            stop(worker)


def _upload(ls, project: int, names: tuple[str, ...]) -> None:
    for name in names:
        with (VOC / name).open("rb") as handle:
            ls.api("POST", f"/api/projects/{project}/import", files={"file": (name, handle)})


def _tasks(ls, project: int, ordering: list[str] | None = None) -> list[dict[str, Any]]:
    """Tasks as the Data Manager reads them (every column computed), in its order."""
    query = json.dumps({"ordering": ordering or []})
    path = f"/api/tasks?project={project}&fields=all&page_size=100&query={query}"
    return list(ls.api("GET", path).json()["tasks"])


def _expected_task_scores(ls, project: int, version: str) -> dict[int, float]:
    """Per task: the mean score of its regions (0 without regions), read from the results."""
    expected: dict[int, float] = {}
    for prediction in ls.predictions(project):
        assert prediction["model_version"] == version
        boxes = [i["score"] for i in prediction["result"] if i["type"] in REGION_TYPES]
        assert prediction["task"] not in expected, "one prediction per task"
        expected[prediction["task"]] = sum(boxes) / len(boxes) if boxes else 0.0
        assert prediction["score"] == pytest.approx(expected[prediction["task"]])
    return expected


def _check_column(ls, project: int, version: str, n_tasks: int) -> None:
    expected = _expected_task_scores(ls, project, version)
    tasks = _tasks(ls, project)
    assert len(tasks) == len(expected) == n_tasks
    for task in tasks:
        assert task["predictions_score"] is not None, f"task {task['id']}: empty score column"
        assert task["predictions_score"] == pytest.approx(expected[task["id"]])
    ordered = _tasks(ls, project, ["tasks:predictions_score"])
    scores = [t["predictions_score"] for t in ordered]
    assert scores == pytest.approx(sorted(expected.values()))
    assert ordered[0]["predictions_score"] == pytest.approx(min(expected.values()))


def test_the_prediction_score_column_holds_the_task_scores(label_studio, stack):
    ls = label_studio
    project = ls.create_project("prediction score")
    _upload(ls, project, FIRST)
    connection = {"project": project, "url": stack.backend_url, "title": TITLE}
    ml = ls.api("POST", "/api/ml", json=connection).json()
    assert ls.api("GET", f"/api/projects/{project}").json()["model_version"] == TITLE
    version = stack.service.model_version(CONFIG, ProjectOptions())

    with LabelStudioClient(ls.url, ls.token, timeout_s=120) as client:
        report = prelabel_project(
            client, project, stack.service, batch_size=2, wait_timeout_s=300, progress=False
        )
    assert report.written == len(FIRST) and report.complete, report.summary()
    assert ls.api("GET", f"/api/projects/{project}").json()["model_version"] == version
    _check_column(ls, project, version, len(FIRST))

    _upload(ls, project, LATER)  # the backend predicts these on a Retrieve
    ls.api(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        json={"selectedItems": {"all": True, "excluded": []}},
    )
    # Label Studio stored the version /setup answered on the connection, and the predictions
    # the backend returned carry it: the same the project now shows.
    assert ls.api("GET", f"/api/ml/{ml['id']}").json()["model_version"] == version
    _check_column(ls, project, version, len(FIRST) + len(LATER))
