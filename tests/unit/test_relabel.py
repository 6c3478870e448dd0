"""relabel: tasks and labeling config renamed together, and the same mapping twice is a no-op."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from click.testing import CliRunner
from zerolabel.cli import relabel as relabel_module
from zerolabel.cli.main import main
from zerolabel.labelstudio.config_edit import default_config
from zerolabel.loop.pseudo_classes import map_task_labels

MERGE = {"cluster_00": "dog", "cluster_01": "dog"}


def _task(task_id: int, labels: list[str]) -> dict[str, Any]:
    result = [
        {
            "id": f"zl-v1-{n}-box",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": 100,
            "original_height": 100,
            "value": {"x": 10 * n, "y": 0, "width": 5, "height": 5, "rectanglelabels": [label]},
        }
        for n, label in enumerate(labels)
    ]
    prediction = {"id": 100 + task_id, "model_version": "v1", "result": result}
    return {
        "id": task_id,
        "data": {"image": f"/data/local-files/?d={task_id}.jpg"},
        "predictions": [prediction],
    }


TASKS = [_task(1, ["cluster_00", "cluster_01"]), _task(2, ["cluster_01"])]


def _labels(tasks: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [item["value"]["rectanglelabels"][0] for item in task["predictions"][-1]["result"]]
        for task in tasks
    ]


def test_a_mapping_applied_twice_leaves_the_tasks_as_the_first_run_did():
    once, carried = map_task_labels(TASKS, MERGE)
    assert _labels(once) == [["dog", "dog"], ["dog"]] and carried == ["cluster_00", "cluster_01"]
    twice, carried_again = map_task_labels(once, MERGE)
    assert twice == once and carried_again == []


def test_a_partly_applied_mapping_applies_the_rest():
    once, _ = map_task_labels(TASKS, {"cluster_00": "dog"})
    twice, carried = map_task_labels(once, MERGE)
    assert _labels(twice) == [["dog", "dog"], ["dog"]] and carried == ["cluster_01"]


def test_a_typo_is_still_refused_and_names_the_labels_in_use():
    with pytest.raises(ValueError, match=r"cluster_7 \(labels in use: cluster_00, cluster_01\)"):
        map_task_labels(TASKS, {"cluster_7": "cat"})
    with pytest.raises(ValueError, match="empty name to cluster_00"):
        map_task_labels(TASKS, {"cluster_00": ""})


class FakeProject:
    """A Label Studio project that, like the server, refuses a prediction whose label its
    config lacks."""

    def __init__(self, config: str, tasks: list[dict[str, Any]]) -> None:
        self.config = config
        self.stored = copy.deepcopy(tasks)
        self.calls: list[str] = []

    def label_config(self, project: int) -> str:
        return self.config

    def set_label_config(self, project: int, config: str) -> dict[str, Any]:
        self.calls.append("config")
        self.config = config
        return {}

    def tasks(self, project: int) -> list[dict[str, Any]]:
        return copy.deepcopy(self.stored)

    def update_prediction(self, prediction_id: int, result: list[dict[str, Any]]) -> dict[str, Any]:
        known = set(re.findall(r'value="([^"]*)"', self.config))
        used = {item["value"]["rectanglelabels"][0] for item in result}
        assert used <= known, f"labels {used - known} are not in the config"
        self.calls.append("prediction")
        for task in self.stored:
            for prediction in task["predictions"]:
                if prediction["id"] == prediction_id:
                    prediction["result"] = result
        return {}


def test_project_relabel_renames_config_and_predictions_and_reruns_as_a_no_op(
    tmp_path, monkeypatch
):
    project = FakeProject(default_config(["object", "cluster_00", "cluster_01"]), TASKS)
    monkeypatch.setattr(relabel_module, "ls_client", lambda settings: project)
    mapping = tmp_path / "mapping.json"
    mapping.write_text('{"cluster_00": "dog", "cluster_01": "dog"}')
    args = ["relabel", "--project", "7", "--mapping", str(mapping)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "relabelled 2 prediction(s) in project 7" in first.output
    assert project.calls == ["config", "prediction", "prediction", "config"]
    assert re.findall(r'value="([^"]*)"', project.config).count("dog") == 2  # both controls
    assert "cluster_0" not in project.config
    assert _labels(project.stored) == [["dog", "dog"], ["dog"]]

    project.calls.clear()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert "nothing to relabel: the mapping was applied already" in again.output
    assert project.calls == []
