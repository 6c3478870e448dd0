"""cluster / export / eval without --model-version read the latest version and say which."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result
from zerolabel.cli.main import main
from zerolabel.labelstudio.versions import choose_model_version
from zerolabel.loop.pseudo_classes import ClusterRun

OLD, NEW = "zerolabel-lost-dino_vits16-0123456789", "zerolabel-tokencut-dino_vits16-abcdef0123"


def _prediction(version: str, objects: int, created: str | None) -> dict[str, Any]:
    result = [
        {
            "id": f"{version[-4:]}-{n}",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": 200,
            "original_height": 100,
            "value": {"x": 2 * n, "y": 10, "width": 2, "height": 5, "rectanglelabels": ["o"]},
        }
        for n in range(objects)
    ]
    stamp = {} if created is None else {"created_at": created}
    return {"model_version": version, "result": result, **stamp}


def _tasks() -> list[dict[str, Any]]:
    """Two tasks: NEW (3 objects each) is newer though listed first; OLD has 1 object each."""
    return [
        {
            "id": i,
            "data": {"image": f"/data/local-files/?d=img{i}.jpg"},
            "predictions": [
                _prediction(NEW, 3, f"2026-05-0{i}T10:00:00Z"),
                _prediction(OLD, 1, f"2026-04-0{i}T10:00:00Z"),
            ],
        }
        for i in (1, 2)
    ]


def _run(args: list[str], tmp_path) -> Result:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(_tasks()))
    return CliRunner().invoke(main, [args[0], *(a.replace("TASKS", str(path)) for a in args[1:])])


SAID = f"using model version {NEW} (latest of 2: {NEW}, {OLD})"


def test_latest_is_the_version_of_the_newest_prediction():
    choice = choose_model_version(_tasks(), None)
    assert (choice.version, choice.versions) == (NEW, (NEW, OLD))
    assert choice.summary() == SAID


def test_without_timestamps_the_version_seen_last_is_the_latest():
    tasks = [{"predictions": [_prediction("a", 1, None), _prediction("b", 1, "2026-01-01")]}]
    tasks.append({"predictions": [_prediction("c", 1, None), _prediction("a", 1, None)]})
    assert choose_model_version(tasks, None).versions == ("a", "c", "b")
    assert choose_model_version([{"predictions": [_prediction("a", 1, None)]}], None).summary() == (
        "using model version a (the only one)"
    )


def test_a_named_version_or_no_prediction_says_nothing():
    assert choose_model_version(_tasks(), OLD).summary() is None
    assert choose_model_version([{"id": 1}], None).version is None


def test_export_reads_the_latest_version_and_names_it(tmp_path):
    out = tmp_path / "out"
    result = _run(
        ["export", "--from-file", "TASKS", "-o", str(out), "--source", "predictions"], tmp_path
    )
    assert result.exit_code == 0, result.output
    assert SAID in result.output
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == 6  # NEW's 3 objects per task, not OLD's one
    assert json.loads((out / "summary.json").read_text())["model_version"] == NEW


def test_eval_scores_the_latest_version_and_names_it(tmp_path):
    tasks = _tasks()
    for task in tasks:
        task["annotations"] = [{"id": task["id"], "result": task["predictions"][0]["result"]}]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    result = CliRunner().invoke(main, ["eval", "--from-file", str(path)])
    assert result.exit_code == 0, result.output
    assert SAID in result.output
    named = CliRunner().invoke(main, ["eval", "--from-file", str(path), "--model-version", NEW])
    assert named.output.replace(SAID + "\n", "") == result.output.replace(SAID + "\n", "")
    assert "using model version" not in named.output


def test_cluster_clusters_the_latest_version_and_names_it(tmp_path, monkeypatch):
    seen: list[str | None] = []

    def fake_cluster(tasks: Any, *args: Any, model_version: str | None, **kwargs: Any) -> Any:
        seen.append(model_version)
        return ClusterRun(labels={}, names=["cluster_00"])

    monkeypatch.setattr("zerolabel.loop.pseudo_classes.cluster_tasks", fake_cluster)
    monkeypatch.setattr("zerolabel.loop.predict.loaded_backbone", lambda s: None)
    args = ["cluster", "TASKS", "-k", "5", "-o", str(tmp_path / "out"), "--cache-dir"]
    result = _run([*args, str(tmp_path / "cache")], tmp_path)
    assert result.exit_code == 0, result.output
    assert seen == [NEW] and SAID in result.output  # 6 objects of NEW: -k 5 is possible
