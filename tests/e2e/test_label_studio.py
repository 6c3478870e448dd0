"""Label Studio -> our backend -> Redis/RQ -> a worker -> pre-annotations in Label Studio."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import requests
from click.testing import CliRunner
from redis import Redis
from zerolabel.cli.main import main
from zerolabel.labelstudio.brush import brush_rle_decode

from tests.e2e.stack import (
    BASIC_AUTH,
    LOCAL,
    UPLOADS,
    VOC,
    backend_stack,
    connect,
    import_tasks,
    metrics,
    retrieve,
)
from tests.ls_reference import check_regions
from tests.patch_grid import is_patch_aligned, maskcut_frame
from tests.servers import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def backend(label_studio, tiny_env, tmp_path_factory):
    """A stack whose backend waits long enough for every job."""
    tmp = tmp_path_factory.mktemp("e2e-stack")
    with backend_stack(label_studio, tiny_env, tmp, wait_s="60") as stack:
        yield stack


def test_label_studio_gets_boxes_and_masks_for_every_task(label_studio, backend):
    ls, worker_metrics_port, backend = label_studio, backend.metrics_port, backend.url
    project = ls.create_project("zerolabel e2e")
    import_tasks(ls, project)
    tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
    assert len(tasks) == len(UPLOADS) + len(LOCAL)
    assert requests.post(f"{backend}/setup", timeout=10, json={}).status_code == 401
    ml, version = connect(ls, project, backend)

    retrieve(ls, project)
    predictions = ls.predictions(project)
    assert Counter(p["task"] for p in predictions) == Counter({t["id"]: 1 for t in tasks})
    for prediction in predictions:
        assert prediction["model_version"] == version
        check_regions(prediction["result"])
    answered = metrics(backend, BASIC_AUTH)
    assert answered["zerolabel_tasks_total", "answered"] == len(tasks)
    assert (
        answered["zerolabel_tasks_total", "late"]
        == answered["zerolabel_tasks_total", "failed"]
        == 0
    )
    assert answered["zerolabel_queue_workers", "zerolabel"] == 1
    run = metrics(f"http://127.0.0.1:{worker_metrics_port}")
    assert run["zerolabel_worker_images_total", ""] == len(tasks)  # one job per task
    for stage in ("fetch", "decode", "forward", "method"):
        assert run["zerolabel_worker_stage_seconds_count", stage] == len(tasks), stage

    retrieve(ls, project)  # a second retrieve adds nothing
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
    with backend_stack(ls, tiny_env, tmp_path, wait_s="0.2", worker=False) as stack:
        project = ls.create_project("zerolabel late tasks")
        import_tasks(ls, project)
        tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
        _, version = connect(ls, project, stack.url)
        logged = ls.log.stat().st_size
        retrieve(ls, project)  # every task is late: no worker is running
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
        retrieve(ls, project)  # asking again adds nothing
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
