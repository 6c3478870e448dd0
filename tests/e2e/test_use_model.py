"""``zerolabel use`` against a real Label Studio: one project is switched to a trained detector
while another keeps its method, and one worker pre-labels both at once, each project with its
own model_version; backend and worker run from one env file that names no detector.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from zerolabel.labelstudio.options import MODEL_KEYS

from tests.e2e.readme_stack import EXTRA_PARAMS, Deployment, deployed
from tests.integration.cad_data import tiny_config, write_tiny_coco

pytestmark = pytest.mark.e2e

PHOTOS = ("000002.jpg", "000003.jpg", "000004.jpg")
CAD_VERSION = re.compile(r"^zerolabel-cad-cad-[0-9a-f]{10}$", flags=re.MULTILINE)


@pytest.fixture(scope="module")
def deployment(label_studio, tiny_env, tmp_path_factory) -> Iterator[Deployment]:
    """redis-server and the backend; the env file gives the models folder, no detector."""
    tmp = tmp_path_factory.mktemp("use-model")
    with deployed(label_studio, tiny_env, tmp) as d:
        yield d


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A detector's training checkpoint after one step (``use`` serves its weights only)."""
    from zerolabel.cad import train

    root = tmp_path_factory.mktemp("detector")
    data = write_tiny_coco(root)
    config = tiny_config(False, iterations=1, checkpoint_every=1)
    return train(config, data / "coco.json", data, root / "run", progress=False)


def _connection(d: Deployment, project: int) -> dict:
    (connection,) = d.ls.api("GET", f"/api/ml?project={project}").json()
    return dict(connection)


def _version(output: str) -> str:
    (found,) = re.findall(r"task\(s\), model version (\S+):", output)
    return str(found)


def _ok(done) -> str:
    assert done.returncode == 0, done.stdout
    return str(done.stdout)


def test_use_switches_one_project_while_the_same_worker_keeps_serving_another(
    deployment: Deployment, trained: Path, tmp_path: Path
) -> None:
    d = deployment
    kept = d.new_project("keeps its method", PHOTOS)
    moved = d.new_project("gets the detector", PHOTOS)
    env = d.env_file("zerolabel.env")
    models = Path(d.settings["ZEROLABEL_MODELS_DIR"])

    line = ["zerolabel", "use", "--project", str(moved), "cad", "--detector", str(trained)]
    switched = _ok(d.zerolabel([*line, "-p", "score_threshold=0.0"], env, tmp_path))
    (cad_version,) = CAD_VERSION.findall(switched)  # printed on a line of its own
    (installed,) = (p.name for p in models.iterdir())
    kept_params = {k: v for k, v in EXTRA_PARAMS.items() if k not in MODEL_KEYS}
    extra = {**kept_params, "method": "cad", "detector": installed, "score_threshold": 0.0}
    assert _connection(d, moved)["extra_params"] == extra
    assert _connection(d, kept)["extra_params"] == EXTRA_PARAMS
    assert cad_version == d.setup_version(moved, extra)  # what the backend now predicts
    assert f"{cad_version} becomes its model version" in switched  # no prediction of it yet

    def prelabel(project: int) -> str:
        return _ok(d.zerolabel(["zerolabel", "prelabel", "--project", str(project)], env, tmp_path))

    with d.worker(env) as worker, ThreadPoolExecutor(2) as pool:  # both projects at once
        kept_out, moved_out = pool.map(prelabel, (kept, moved))
        assert worker.poll() is None  # one worker process served both
    kept_version = _version(kept_out)
    assert _version(moved_out) == cad_version
    assert kept_version.startswith("zerolabel-lost-") and kept_version != cad_version
    assert (
        f"project {kept}: method lost from ZEROLABEL_METHOD (the Extra params of its ML "
        f"backend connection 'zerolabel' ({d.backend_url}) name no method)" in kept_out
    )
    assert (
        f"project {moved}: method cad, detector {installed} from the Extra params of its ML "
        f"backend connection" in moved_out
    )
    for project, version in ((kept, kept_version), (moved, cad_version)):
        predictions = d.ls.predictions(project)
        assert Counter(p["model_version"] for p in predictions) == {version: len(PHOTOS)}
        assert d.ls.api("GET", f"/api/projects/{project}").json()["model_version"] == version
    log = (d.tmp / "worker.log").read_text()
    assert log.count("loading detector") == 1 and installed in log

    # The team's mistake of the issue: the environment says one method, the project another.
    other = d.env_file("maskcut.env", ZEROLABEL_METHOD="maskcut")
    told = d.zerolabel(["zerolabel", "prelabel", "--project", str(moved)], other, tmp_path)
    warned = _ok(told)
    assert f"0 written, {len(PHOTOS)} already pre-labeled" in warned
    assert f"ZEROLABEL_METHOD=maskcut is not used for project {moved}" in warned
    assert f"zerolabel use --project {moved} METHOD" in warned


def test_use_refuses_a_project_without_a_connection_and_a_name_the_folder_lacks(
    deployment: Deployment, trained: Path, tmp_path: Path
) -> None:
    d = deployment
    env = d.env_file("zerolabel.env")
    bare = d.ls.create_project("no connection")
    before = sorted(Path(d.settings["ZEROLABEL_MODELS_DIR"]).glob("*"))
    line = ["zerolabel", "use", "--project", str(bare), "cad", "--detector", str(trained)]
    refused = d.zerolabel(line, env, tmp_path)
    assert refused.returncode == 1
    assert f"Error: project {bare} has no ML backend connection" in refused.stdout
    assert sorted(Path(d.settings["ZEROLABEL_MODELS_DIR"]).glob("*")) == before

    project = d.new_project("named file", PHOTOS[:1])
    Path(d.settings["ZEROLABEL_MODELS_DIR"]).mkdir(exist_ok=True)
    line = ["zerolabel", "use", "--project", str(project), "cad", "--detector", "cad-ffffffffff.pt"]
    missing = d.zerolabel(line, env, tmp_path)
    assert missing.returncode == 1 and "is not in ZEROLABEL_MODELS_DIR" in missing.stdout
    assert json.dumps(_connection(d, project)["extra_params"]) == json.dumps(EXTRA_PARAMS)
