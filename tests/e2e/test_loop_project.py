"""The labeling loop on a real Label Studio project: cluster, relabel, annotate, eval, export."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from pycocotools.coco import COCO
from zerolabel.cli.main import main
from zerolabel.labelstudio.label_config import find_target
from zerolabel.loop.pseudo_classes import object_key

from tests.servers import ROOT

pytestmark = pytest.mark.e2e

VOC = ROOT / "examples" / "voc2007" / "JPEGImages"
PHOTOS = ("000002.jpg", "000003.jpg", "000005.jpg", "000009.jpg")


@pytest.fixture(scope="module")
def project(label_studio, tiny_env, tmp_path_factory):
    """A project whose tasks carry predictions made by `zerolabel predict`."""
    ls = label_studio
    folder = ls.document_root / "loop"
    folder.mkdir(exist_ok=True)
    for name in PHOTOS:
        shutil.copy(VOC / name, folder / name)
    env = {
        **tiny_env,
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.token,
    }
    out = tmp_path_factory.mktemp("loop-predict")
    made = CliRunner().invoke(
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
    assert made.exit_code == 0, made.output
    project_id = ls.create_project("loop")
    ls.add_local_storage(project_id, folder)
    ls.api(
        "POST",
        f"/api/projects/{project_id}/import",
        json=json.loads((out / "tasks.json").read_text()),
    )
    return ls, project_id, env


def _label_sets(ls, project_id):
    """{(task, object): labels} over every prediction region of the project."""
    found: dict[tuple[int, str], set[str]] = {}
    for prediction in ls.predictions(project_id):
        for item in prediction["result"]:
            names = item["value"].get("rectanglelabels") or item["value"].get("brushlabels")
            found.setdefault((prediction["task"], object_key(item["id"])), set()).update(names)
    return found


def test_cluster_and_relabel_a_project(project, tmp_path):
    ls, project_id, env = project
    clustered = CliRunner().invoke(
        main,
        ["cluster", "--project", str(project_id), "-k", "2", "--cache-dir", str(tmp_path)],
        env=env,
    )
    assert clustered.exit_code == 0, clustered.output
    config = ls.api("GET", f"/api/projects/{project_id}").json()["label_config"]
    for name in ("cluster_00", "cluster_01"):
        target = find_target(config, label=name)
        assert target.label == name and target.brush_label == name  # in both controls
    labels = _label_sets(ls, project_id)
    assert all(len(names) == 1 for names in labels.values())  # box and mask agree
    assert Counter(n for names in labels.values() for n in names).keys() == {
        "cluster_00",
        "cluster_01",
    }
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"cluster_00": "thing", "cluster_01": "thing"}))
    merged = CliRunner().invoke(
        main, ["relabel", "--project", str(project_id), "--mapping", str(mapping)], env=env
    )
    assert merged.exit_code == 0, merged.output
    assert {n for names in _label_sets(ls, project_id).values() for n in names} == {"thing"}


def test_eval_and_export_a_corrected_project(project, tmp_path):
    ls, project_id, env = project
    predictions = ls.predictions(project_id)
    for prediction in predictions:  # an annotator accepts every pre-label as is
        ls.api(
            "POST",
            f"/api/tasks/{prediction['task']}/annotations",
            json={"result": prediction["result"]},
        )
    version = predictions[0]["model_version"]
    scored = CliRunner().invoke(
        main, ["eval", "--project", str(project_id), "--model-version", version], env=env
    )
    assert scored.exit_code == 0, scored.output
    assert "CorLoc (%)" in scored.output and "100.0" in scored.output

    out = tmp_path / "export"
    exported = CliRunner().invoke(
        main, ["export", "--project", str(project_id), "-o", str(out), "--download-images"], env=env
    )
    assert exported.exit_code == 0, exported.output
    coco = COCO()
    coco.dataset = json.loads((out / "coco.json").read_text())
    coco.createIndex()
    assert len(coco.imgs) == len(PHOTOS) and coco.anns
    for image in coco.imgs.values():
        assert (out / "images" / image["file_name"]).is_file()
    assert all(
        coco.annToMask(a).sum() == a["area"] for a in coco.anns.values() if a.get("segmentation")
    )
    assert Path(out / "yolo" / "labels" / "classes.txt").read_text().split() == ["object"]


def test_a_task_annotated_as_empty_is_exported_and_scored_as_a_negative(project, tmp_path):
    ls, project_id, env = project
    predictions = ls.predictions(project_id)
    negative = predictions[0]["task"]
    ls.api("POST", f"/api/tasks/{negative}/annotations", json={"result": []})  # "nothing here"

    out = tmp_path / "export"
    exported = CliRunner().invoke(
        main,
        ["export", "--project", str(project_id), "-o", str(out), "--download-images"]
        + ["--val-fraction", "0.5"],
        env=env,
    )
    assert exported.exit_code == 0, exported.output
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["images"]) == len(PHOTOS)
    (image,) = [im for im in coco["images"] if im["ls_task_id"] == negative]
    assert not [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    name = image["file_name"]
    served = (out / "images" / name).read_bytes()
    assert served == (ls.document_root / "loop" / Path(name).name).read_bytes()
    labels = list((out / "yolo" / "labels").rglob(f"{Path(name).stem}.txt"))
    assert len(labels) == 1 and labels[0].read_text() == ""

    version = predictions[0]["model_version"]
    scored = CliRunner().invoke(
        main, ["eval", "--project", str(project_id), "--model-version", version], env=env
    )
    assert scored.exit_code == 0, scored.output
    assert any(
        line.split()[:3] == ["negatives", "(no", "object)"] and line.split()[-1] == "1"
        for line in scored.output.splitlines()
    )
