"""Label Studio -> our backend -> Redis/RQ -> a worker -> pre-annotations in Label Studio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest
import requests
from click.testing import CliRunner
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


@pytest.fixture(scope="module")
def backend(label_studio, tiny_env, tmp_path_factory):
    """redis-server, one worker and the backend (``zerolabel serve``, basic auth on), as real
    processes. Workers download with their own key; the token /setup sends is never used."""
    tmp = tmp_path_factory.mktemp("e2e-stack")
    port = free_port()
    with redis_server(tmp) as (redis_url, _):
        env = {
            "REDIS_URL": redis_url,
            **tiny_env,
            "ZEROLABEL_WAIT_TIMEOUT_S": "60",
            "LABEL_STUDIO_URL": label_studio.url,
            "LABEL_STUDIO_API_KEY": label_studio.token,
            "BASIC_AUTH_USER": BASIC_AUTH[0],
            "BASIC_AUTH_PASS": BASIC_AUTH[1],
            "ZEROLABEL_REQUIRE_BASIC_AUTH": "true",
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
            wait_for_workers(redis_url, 1)
            wait_for(lambda: requests.get(f"{url}/health", timeout=2).ok, 60, "backend")
            yield url
            stored = b"".join(redis_contents(Redis.from_url(redis_url)))
            assert label_studio.token.encode() not in stored, "a token was stored in Redis"
        finally:
            stop(server)
            stop(worker)
        logs = (tmp / "backend.log").read_text() + (tmp / "worker.log").read_text()
        assert label_studio.token not in logs, "a token leaked into the logs"


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


def test_label_studio_gets_boxes_and_masks_for_every_task(label_studio, backend):
    ls = label_studio
    project = ls.create_project("zerolabel e2e")
    _import_tasks(ls, project)
    tasks = ls.api("GET", f"/api/tasks?project={project}&page_size=100").json()["tasks"]
    assert len(tasks) == len(UPLOADS) + len(LOCAL)
    assert requests.post(f"{backend}/setup", timeout=10, json={}).status_code == 401
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

    _retrieve(ls, project)
    predictions = ls.predictions(project)
    assert Counter(p["task"] for p in predictions) == Counter({t["id"]: 1 for t in tasks})
    for prediction in predictions:
        assert prediction["model_version"] == version
        check_regions(prediction["result"])

    _retrieve(ls, project)  # a second retrieve adds nothing
    assert len(ls.predictions(project)) == len(tasks)
    assert ls.api("GET", f"/api/ml/{ml['id']}").json()["state"] != "ER"


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
