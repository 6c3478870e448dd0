"""predict -> cluster -> relabel -> export on example photos (folder mode, tiny random ViT)."""

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

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, tiny_env):
    root = tmp_path_factory.mktemp("loop")
    photos = root / "photos"
    photos.mkdir()
    for path in sorted(VOC.glob("*.jpg"))[:6]:
        shutil.copy(path, photos / path.name)
    env = {
        **tiny_env,
    }
    out = root / "pred"
    result = CliRunner().invoke(
        main,
        ["predict", str(photos), "-m", "maskcut", "-o", str(out), "--document-root", str(photos)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return root, photos, out / "tasks.json", env


def _labels_per_object(tasks):
    """{(task, object): set of labels on its regions} for every region."""
    labels: dict[tuple[int, str], set[str]] = {}
    for index, task in enumerate(tasks):
        for item in task["predictions"][-1]["result"]:
            value = item["value"]
            names = value.get("rectanglelabels") or value.get("brushlabels")
            labels.setdefault((index, object_key(item["id"])), set()).update(names)
    return labels


def _cluster(root, photos, tasks_file, env, name, *extra):
    out = root / name
    result = CliRunner().invoke(
        main,
        [
            "cluster",
            str(tasks_file),
            "-k",
            "2",
            "-o",
            str(out),
            "--document-root",
            str(photos),
            "--cache-dir",
            str(root / "cache"),
            *extra,
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return out


def test_cluster_labels_every_object_consistently_and_repeats_from_cache(predicted):
    root, photos, tasks_file, env = predicted
    out = _cluster(root, photos, tasks_file, env, "clustered")
    tasks = json.loads((out / "tasks.json").read_text())
    per_object = _labels_per_object(tasks)
    assert all(len(names) == 1 for names in per_object.values())  # box and mask agree
    used = Counter(next(iter(names)) for names in per_object.values())
    assert set(used) == {"cluster_00", "cluster_01"}
    assert json.loads((out / "clusters.json").read_text()) == {
        "cluster_00": "cluster_00",
        "cluster_01": "cluster_01",
    }
    target = find_target((out / "label_config.xml").read_text(), label="cluster_01")
    assert target.box_from_name == "label" and target.brush_from_name == "mask"

    cached = sorted(p.name for p in (root / "cache").rglob("*.npy"))
    assert len(cached) == len(per_object)
    again = _cluster(root, photos, tasks_file, env, "again")
    assert json.loads((again / "tasks.json").read_text()) == tasks  # same seed, same labels
    assert sorted(p.name for p in (root / "cache").rglob("*.npy")) == cached


def test_objects_of_an_unreadable_image_fail_alone(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    broken_root = tmp_path / "photos"
    shutil.copytree(photos, broken_root)
    first = json.loads(tasks_file.read_text())[0]["data"]["image"].split("=")[-1]
    (broken_root / first).write_bytes(b"")
    out = _cluster(tmp_path, broken_root, tasks_file, env, "partial")
    tasks = json.loads((out / "tasks.json").read_text())
    per_object = _labels_per_object(tasks)
    assert {n for (i, _), names in per_object.items() if i == 0 for n in names} == {"object"}
    assert all(
        names <= {"cluster_00", "cluster_01"} for (i, _), names in per_object.items() if i > 0
    )


def test_relabel_merges_clusters_and_rejects_unknown_names(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    clustered = _cluster(root, photos, tasks_file, env, "to-merge")
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"cluster_00": "animal", "cluster_01": "animal"}))
    merged = tmp_path / "merged.json"
    result = CliRunner().invoke(
        main,
        ["relabel", str(clustered / "tasks.json"), "--mapping", str(mapping), "-o", str(merged)],
    )
    assert result.exit_code == 0, result.output
    per_object = _labels_per_object(json.loads(merged.read_text()))
    assert {n for names in per_object.values() for n in names} == {"animal"}
    mapping.write_text(json.dumps({"cluster_07": "x"}))
    refused = CliRunner().invoke(
        main,
        ["relabel", str(clustered / "tasks.json"), "--mapping", str(mapping), "-o", str(merged)],
    )
    assert refused.exit_code == 1 and "cluster_07" in refused.output


def test_export_of_labelled_predictions_keeps_the_pseudo_classes(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    clustered = _cluster(root, photos, tasks_file, env, "to-export")
    out = tmp_path / "export"
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--from-file",
            str(clustered / "tasks.json"),
            "-o",
            str(out),
            "--source",
            "predictions",
            "--labels",
        ],
    )
    assert result.exit_code == 0, result.output
    coco = COCO()
    coco.dataset = json.loads((out / "coco.json").read_text())
    coco.createIndex()
    assert {c["name"] for c in coco.cats.values()} == {"cluster_00", "cluster_01"}
    assert len(coco.imgs) == 6 and all(a["segmentation"] for a in coco.anns.values())
    assert (out / "yolo" / "labels" / "classes.txt").read_text().split() == [
        "cluster_00",
        "cluster_01",
    ]


def test_export_splits_into_an_ultralytics_layout_with_the_images(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    out = tmp_path / "split"
    tasks = json.loads(tasks_file.read_text())
    tasks[0]["annotations"] = [{"id": 1, "result": []}]  # an annotator: nothing here
    for task in tasks[1:]:
        task["annotations"] = [{"id": 2, "result": task["predictions"][-1]["result"]}]
    source = tmp_path / "annotated.json"
    source.write_text(json.dumps(tasks))
    result = CliRunner().invoke(
        main,
        ["export", "--from-file", str(source), "-o", str(out), "-f", "yolo", "-f", "voc"]
        + ["--val-fraction", "0.34", "--seed", "1", "--document-root", str(photos)]
        + ["--download-images"],
    )
    assert result.exit_code == 0, result.output
    yolo = out / "yolo"
    data = (yolo / "data.yaml").read_text()
    assert 'train: "images/train"' in data and 'val: "images/val"' in data
    by_split = {s: sorted((yolo / "labels" / s).glob("*.txt")) for s in ("train", "val")}
    assert len(by_split["train"]) + len(by_split["val"]) == 6 and len(by_split["val"]) == 2
    negative = Path(tasks[0]["data"]["image"].split("=")[-1]).stem
    assert any(
        p.stem == negative and p.read_text() == "" for p in by_split["train"] + by_split["val"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["negatives"] == 1 and summary["split"] == {"train": 4, "val": 2}
    voc_lists = out / "voc" / "ImageSets" / "Main"
    assert len((voc_lists / "val.txt").read_text().split()) == 2
    for split, files in by_split.items():  # the photos themselves, byte for byte
        for label in files:
            image = yolo / "images" / split / f"{label.stem}.jpg"
            assert image.read_bytes() == (photos / image.name).read_bytes()
            assert (out / "voc" / "JPEGImages" / image.name).read_bytes() == image.read_bytes()


def test_cluster_takes_backbone_and_weights_on_the_command_line(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    from_env = _cluster(root, photos, tasks_file, env, "weights-from-env")
    bare = {k: v for k, v in env.items() if k not in ("ZEROLABEL_CHECKPOINT", "ZEROLABEL_BACKBONE")}
    out = tmp_path / "weights-from-options"
    args = ["cluster", str(tasks_file), "-k", "2", "-o", str(out), "--document-root", str(photos)]
    weights = ["-b", env["ZEROLABEL_BACKBONE"], "-c", env["ZEROLABEL_CHECKPOINT"]]
    result = CliRunner().invoke(
        main, [*args, *weights, "--cache-dir", str(tmp_path / "cache")], env=bare
    )
    assert result.exit_code == 0, result.output
    assert (out / "tasks.json").read_text() == (from_env / "tasks.json").read_text()


def test_relabel_keeps_the_folder_config_in_step_and_is_rerunnable(predicted, tmp_path):
    root, photos, tasks_file, env = predicted
    clustered = _cluster(root, photos, tasks_file, env, "to-rename")
    config_file = clustered / "label_config.xml"
    config_file.write_text(config_file.read_text().replace("<View>", "<View>\n  <!-- team -->"))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"cluster_00": "animal", "cluster_01": "animal"}))
    args = ["relabel", str(clustered / "tasks.json"), "--mapping", str(mapping)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    config = config_file.read_text()
    assert "<!-- team -->" in config and "cluster_0" not in config
    assert find_target(config, label="animal").brush_label == "animal"
    relabelled = (clustered / "tasks.json").read_bytes()
    names = {n for s in _labels_per_object(json.loads(relabelled)).values() for n in s}
    assert names == {"animal"}

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "nothing to relabel: the mapping was applied already" in again.output
    assert (clustered / "tasks.json").read_bytes() == relabelled
    assert config_file.read_text() == config
