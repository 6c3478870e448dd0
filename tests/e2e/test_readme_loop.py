"""The README's labeling loop, line by line, against a real Label Studio, redis-server, backend
and workers, the last two started from an env file the way the README deploys them.

The commands come from README.md (:mod:`tests.e2e.readme`) and run as written, with the project
id, paths and ``<digest>`` filled in from earlier outputs and test-scale sizes through
documented options (fewer clusters and iterations, small detector inputs). ``zerolabel
--env-file FILE`` (a global option of every command) gives each command the deployment's
settings. Annotators' corrections go through Label Studio's API, as a team's would.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.options import MODEL_KEYS

from tests.e2e.readme import LOOP, Line, echo_json, shell_lines, with_values
from tests.e2e.readme_stack import EXTRA_PARAMS, Deployment, deployed
from tests.servers import ROOT

pytestmark = pytest.mark.e2e

VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
PHOTOS = tuple(f"0000{n:02d}.jpg" for n in (2, 3, 4, 5, 6, 7, 8, 9))
LOOP_STEPS = [
    "prelabel",
    "cluster",
    "clusters-sheet",
    "echo",
    "relabel",
    "export",
    "export",
    "train-cad",
    "self-train",
    "use",
    "eval",
]
SMALL_DETECTOR = ["--min-size", "224", "--max-size", "320", "--device", "cpu"]
EDITED_BOX = {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0}  # percent, as LS stores it


@pytest.fixture(scope="module")
def deployment(label_studio, tiny_env, tmp_path_factory) -> Iterator[Deployment]:
    """redis-server and the backend (the env file's settings: the tiny ViT on CPU, basic auth)."""
    tmp = tmp_path_factory.mktemp("readme-loop")
    with deployed(label_studio, tiny_env, tmp) as d:
        yield d


def _loop() -> list[Line]:
    lines = shell_lines(LOOP)
    assert [line.command for line in lines] == LOOP_STEPS, "the README's loop changed"
    return lines


def _version(output: str) -> str:
    """The model version a prelabel summary names."""
    found = re.findall(r"task\(s\), model version (\S+):", output)
    assert len(found) == 1, output
    return str(found[0])


def _error_line(output: str) -> str:
    """The one ``Error:`` line a failed command ends with (log lines may come before it)."""
    lines = output.strip().splitlines()
    assert [n for n in lines if n.startswith("Error:")] == lines[-1:], output
    assert "Traceback" not in output, output
    return lines[-1]


def _labels(predictions: list[dict]) -> set[str]:
    return {
        name
        for prediction in predictions
        for item in prediction["result"]
        for name in item["value"].get("rectanglelabels", [])
    }


def _config_labels(config: str) -> set[str]:
    return set(re.findall(r'<Label\b[^>]*\bvalue="([^"]+)"', config))


def _photo(task: dict) -> str:
    """The example photo behind an uploaded task (``/data/upload/<p>/<hash>-<name>``)."""
    return str(task["data"]["image"]).rsplit("/", 1)[-1].split("-", 1)[1]


def test_prelabel_refuses_without_a_live_worker_or_with_options_unlike_the_connection(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    project = d.new_project("readme refusals", PHOTOS[:2])
    step = _loop()[0]
    env = d.env_file("zerolabel.env")
    jobs = d.jobs()

    alone = d.zerolabel(with_values(step.argv, {"--project": str(project)}), env, tmp_path)
    assert alone.returncode == 1, alone.stdout
    line = _error_line(alone.stdout)
    assert line.startswith("Error: no live worker on queue 'zerolabel'"), line
    assert "2 task(s) to pre-label would wait in the queue" in line

    assert step.alternative[0] == "--options", "the README's other form of step 1 changed"
    other = with_values(step.argv, {"--project": str(project)}) + step.alternative
    refused = d.zerolabel(other, env, tmp_path)  # the connection is found through GET /api/ml
    assert refused.returncode == 1, refused.stdout
    line = _error_line(refused.stdout)
    assert line.startswith("Error: --options give model version zerolabel-maskcut-"), line
    assert f"ML backend connection 'zerolabel' ({d.backend_url})" in line
    assert f"predicts {d.setup_version(project, EXTRA_PARAMS)}" in line
    assert json.dumps(EXTRA_PARAMS, sort_keys=True) in line

    assert d.jobs() == jobs, "a refused prelabel queued jobs"
    assert d.ls.predictions(project) == []


@dataclass
class _Loop:
    """Runs README lines on one project, from ``work`` (where the README's paths land)."""

    d: Deployment
    project: int
    work: Path

    def run(self, line: Line, env: Path, *extra: str, **values: str) -> str:
        """The line with ``--project`` and ``values`` filled in, then ``extra``; its output."""
        filled = {"--project": str(self.project)} if "--project" in line.argv else {}
        filled |= {
            f"-{k}" if len(k) == 1 else f"--{k.replace('_', '-')}": v for k, v in values.items()
        }
        done = self.d.zerolabel([*with_values(line.argv, filled), *extra], env, self.work)
        assert done.returncode == 0, f"{' '.join(line.argv)}:\n{done.stdout}"
        return done.stdout

    def out(self, line: Line) -> Path:
        return self.work / line.argv[line.argv.index("-o") + 1]

    def predictions(self) -> list[dict]:
        return self.d.ls.predictions(self.project)


def test_the_readme_loop_as_written(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    prelabel, cluster, sheets, echo, relabel, export, export_labels, *rest = _loop()
    train, self_train, use, evaluate = rest
    loop = _Loop(d, d.new_project("readme loop", PHOTOS), tmp_path)
    tasks = {t["id"]: t for t in d.tasks(loop.project)}
    assert len(tasks) == len(PHOTOS)
    env = d.env_file("zerolabel.env")

    # 1. Pre-label through the queue with the connection's Extra params; again: nothing to do.
    with d.worker(env):
        done, again = loop.run(prelabel, env), loop.run(prelabel, env)
    version = _version(done)
    assert f"{len(PHOTOS)} written" in done
    assert f"0 written, {len(PHOTOS)} already pre-labeled" in again
    assert version == d.setup_version(loop.project, EXTRA_PARAMS)  # what the backend writes
    assert version != d.setup_version(loop.project, None)
    predictions = loop.predictions()
    assert Counter(p["task"] for p in predictions) == Counter(dict.fromkeys(tasks, 1))
    assert {p["model_version"] for p in predictions} == {version}
    assert {item["type"] for p in predictions for item in p["result"]} == {"rectanglelabels"}

    # 2. Cluster into as many pseudo-classes as the README's mapping names; look; rename, merge.
    mapping_file, mapping = echo_json(echo)
    ours = {name: f"cluster_{i:02d}" for i, name in enumerate(sorted(mapping))}
    clustered = loop.run(cluster, env, k=str(len(ours)))
    assert f"{len(ours)} pseudo-classes over {len(PHOTOS)} objects" in clustered
    for name in ours.values():
        assert find_target(d.label_config(loop.project), label=name).label == name
    assert _labels(loop.predictions()) == set(ours.values())
    loop.run(sheets, env)
    assert sorted(p.stem for p in loop.out(sheets).glob("*.png")) == sorted(ours.values())
    (tmp_path / mapping_file).write_text(json.dumps({ours[k]: v for k, v in mapping.items()}))
    loop.run(relabel, env)
    relabelled = loop.predictions()
    config = d.label_config(loop.project)
    assert _labels(relabelled) == set(mapping.values()) <= _config_labels(config)
    assert not [name for name in _config_labels(config) if name.startswith("cluster_")]
    loop.run(relabel, env)  # the same mapping again changes nothing
    assert d.label_config(loop.project) == config
    assert _results(loop.predictions()) == _results(relabelled)

    # 3. Annotators accept the pre-labels, move one box and mark one photo as empty.
    edited, negative = sorted(tasks)[:2]
    annotated = _annotate(d, relabelled, edited, negative)

    # 4. Export the corrections: one "object" class, then the team's classes.
    loop.run(export, env)
    _check_export(loop.out(export), tasks, edited, negative)
    loop.run(export_labels, env)
    coco = json.loads((loop.out(export_labels) / "coco.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert {names[a["category_id"]] for a in coco["annotations"]} == annotated

    # 5. Train the detector, then one self-training round from it.
    trained = loop.run(train, env, *SMALL_DETECTOR, iterations="2")
    (checkpoint,) = loop.out(train).glob("cad-*.pt")
    assert checkpoint.name in trained and (loop.out(train) / "checkpoint_last.pt").is_file()
    relative = str(checkpoint.relative_to(tmp_path))
    loop.run(self_train, env, "--iterations", "1", *SMALL_DETECTOR, checkpoint=relative)
    assert len(list(loop.out(self_train).glob("cad-*.pt"))) == 1

    # 6. Serve the last round's detector to the project with one command: the backend and a
    #    worker of step 1's settings (nothing edited, nothing restarted), prelabel included.
    (detector,) = loop.out(self_train).glob("cad-*.pt")
    with d.worker(env):
        switched = loop.run(use, env, detector=str(detector.relative_to(tmp_path)))
        cad_version = _version(switched)
        assert cad_version in switched.splitlines()  # printed on a line of its own
        kept = {k: v for k, v in EXTRA_PARAMS.items() if k not in MODEL_KEYS}
        extra = {**kept, "method": "cad", "detector": detector.name}
        assert _connection(d, loop.project)["extra_params"] == extra
        assert cad_version == d.setup_version(loop.project, extra)  # the backend's
        d.retrieve(loop.project)  # Label Studio asks the backend: that version is there already
    assert cad_version.startswith("zerolabel-cad-cad-") and cad_version != version
    installed = Path(d.settings["ZEROLABEL_MODELS_DIR"]) / detector.name
    assert installed.read_bytes() == detector.read_bytes()
    assert d.ls.api("GET", f"/api/projects/{loop.project}").json()["model_version"] == cad_version
    predictions = loop.predictions()
    assert Counter(p["model_version"] for p in predictions) == {
        version: len(PHOTOS),
        cad_version: len(PHOTOS),
    }
    assert {p["task"] for p in predictions if p["model_version"] == cad_version} == set(tasks)

    # 7. Measure the detector's pre-labels against the corrections.
    scored = loop.run(evaluate, env, model_version=cad_version)
    table = dict(line.rsplit(None, 1) for line in scored.splitlines() if line.strip())
    assert table["images"] == str(len(PHOTOS)) and table["negatives (no object)"] == "1"
    assert table["without prediction"] == "0"  # every photo has the detector's prediction
    assert {"CorLoc (%)", "AP50 (%)", "AP (%)", "AR100 (%)"} <= set(table)


def _connection(d: Deployment, project: int) -> dict:
    """The project's one ML backend connection, as Label Studio stores it."""
    (connection,) = d.ls.api("GET", f"/api/ml?project={project}").json()
    return dict(connection)


def _annotate(d: Deployment, predictions: list[dict], edited: int, negative: int) -> set[str]:
    """One annotation per task through the API: the prediction as is, but one box moved in
    ``edited`` and nothing in ``negative``. Returns the labels annotated."""
    labels: set[str] = set()
    for prediction in predictions:
        result = copy.deepcopy(prediction["result"])
        if prediction["task"] == negative:
            result = []
        elif prediction["task"] == edited:
            result[0]["value"].update(EDITED_BOX)
        labels |= _labels([{"result": result}])
        d.ls.api("POST", f"/api/tasks/{prediction['task']}/annotations", json={"result": result})
    return labels


def _results(predictions: list[dict]) -> list[tuple[int, str]]:
    return sorted((p["id"], json.dumps(p["result"], sort_keys=True)) for p in predictions)


def _check_export(out: Path, tasks: dict[int, dict], edited: int, negative: int) -> None:
    """coco.json has every photo, the moved box and the negative; YOLO agrees; images saved."""
    coco = json.loads((out / "coco.json").read_text())
    images = {image["ls_task_id"]: image for image in coco["images"]}
    assert set(images) == set(tasks)
    boxes = {
        t: [a["bbox"] for a in coco["annotations"] if a["image_id"] == images[t]["id"]]
        for t in tasks
    }
    w, h = images[edited]["width"], images[edited]["height"]
    moved = [w * 0.10, h * 0.20, w * 0.30, h * 0.40]
    assert any(box == pytest.approx(moved, abs=1.0) for box in boxes[edited]), boxes[edited]
    assert boxes[negative] == [] and all(boxes[t] for t in tasks if t != negative)
    for task, image in images.items():
        saved = out / "images" / image["file_name"]
        assert saved.read_bytes() == (VOC / _photo(tasks[task])).read_bytes()

    def yolo(task: int) -> str:
        (found,) = (out / "yolo" / "labels").rglob(f"{Path(images[task]['file_name']).stem}.txt")
        return found.read_text()

    assert yolo(negative) == ""
    rows = [[float(v) for v in row.split()] for row in yolo(edited).splitlines()]
    assert [0.0, 0.25, 0.40, 0.30, 0.40] in [pytest.approx(r, abs=1e-3) for r in rows]
    split = {p.parent.name for p in (out / "yolo" / "images").rglob("*.jpg")}
    assert split == {"train", "val"}  # --val-fraction
