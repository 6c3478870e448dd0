"""zerolabel import: a folder run's tasks into a project, with the storage its URLs need."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from click.testing import CliRunner
from zerolabel.cli import project as project_module
from zerolabel.cli.main import main
from zerolabel.labelstudio.config_edit import default_config
from zerolabel.labelstudio.label_config import find_target


def _task(path: str, label: str = "object", from_name: str = "label") -> dict[str, Any]:
    box = {
        "id": "zl-ab12-0-box",
        "type": "rectanglelabels",
        "from_name": from_name,
        "to_name": "image",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": [label]},
    }
    prediction = {"model_version": "zerolabel-maskcut-x", "score": 0.5, "result": [box]}
    return {"data": {"image": f"/data/local-files/?d={path}"}, "predictions": [prediction]}


class FakeProject:
    """The calls import makes, answered as Label Studio 1.23 answers them."""

    def __init__(self, config: str = "<View></View>", storages: list[str] = ()) -> None:
        self.config = config
        self.storages = [{"id": n, "path": p} for n, p in enumerate(storages, 1)]
        self.stored: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def tasks(self, project: int) -> list[dict[str, Any]]:
        return copy.deepcopy(self.stored)

    def local_storages(self, project: int) -> list[dict[str, Any]]:
        return list(self.storages)

    def create_local_storage(self, project: int, path: str, *, title: str) -> dict[str, Any]:
        self.calls.append(f"storage {path}")
        self.storages.append({"id": len(self.storages) + 1, "path": path, "title": title})
        return self.storages[-1]

    def label_config(self, project: int) -> str:
        return self.config

    def set_label_config(self, project: int, config: str) -> dict[str, Any]:
        self.calls.append("config")
        self.config = config
        return {}

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(f"import {len(tasks)}")
        self.stored.extend(copy.deepcopy(tasks))
        count = sum(len(t.get("predictions", [])) for t in tasks)
        return {"task_count": len(tasks), "prediction_count": count}


@pytest.fixture
def run(tmp_path, monkeypatch):
    def invoke(fake: FakeProject, tasks: list[dict[str, Any]], *extra: str):
        monkeypatch.setattr(project_module, "ls_client", lambda settings: fake)
        tasks_file = tmp_path / "tasks.json"
        tasks_file.write_text(json.dumps(tasks))
        args = ["import", "--project", "4", str(tasks_file), "--document-root", str(tmp_path)]
        return CliRunner().invoke(main, [*args, *extra])

    return invoke


def test_a_new_project_gets_storage_config_and_tasks_and_a_rerun_imports_nothing(run, tmp_path):
    fake = FakeProject()
    tasks = [_task("street/a.jpg"), _task("street/night/b.jpg", label="cluster_01")]
    first = run(fake, tasks)
    assert first.exit_code == 0, first.output
    folder = os.path.join(str(tmp_path), "street")
    assert fake.calls == [f"storage {folder}", "config", "import 2"]
    assert "imported 2 task(s) with 2 prediction(s) into project 4" in first.output
    assert fake.config == default_config(["object", "cluster_01"])
    assert fake.stored == tasks  # predictions travel with their tasks

    again = run(fake, tasks)
    assert again.exit_code == 0, again.output
    assert fake.calls == [f"storage {folder}", "config", "import 2"]  # no new call
    assert "nothing to import: every task is in project 4 already" in again.output


def test_a_storage_of_a_parent_folder_covers_the_images(run, tmp_path):
    fake = FakeProject(default_config(["object"]), storages=[str(tmp_path)])
    result = run(fake, [_task("street/a.jpg")])
    assert result.exit_code == 0, result.output
    assert fake.calls == ["import 1"]


def test_labels_missing_from_a_team_config_are_added_keeping_it(run):
    config = (
        '<View>\n  <!-- ours -->\n  <Image name="image" value="$image"/>\n'
        '  <RectangleLabels name="label" toName="image"><Label value="car"/></RectangleLabels>\n'
        "</View>"
    )
    fake = FakeProject(config)
    result = run(fake, [_task("street/a.jpg", label="cluster_00")])
    assert result.exit_code == 0, result.output
    assert "<!-- ours -->" in fake.config
    assert find_target(fake.config, label="cluster_00").label == "cluster_00"
    assert find_target(fake.config, label="car").label == "car"


def test_predictions_for_a_control_the_config_lacks_are_refused_before_any_import(run):
    fake = FakeProject(default_config(["object"]))
    result = run(fake, [_task("street/a.jpg", from_name="boxes")])
    assert result.exit_code == 1
    assert '<RectangleLabels name="boxes" toName="image">' in result.output
    assert not [c for c in fake.calls if c.startswith("import")]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a.jpg", "directly in the document root"),
        ("/srv/photos/a.jpg", "is not below the document root"),
        ("set1/../../outside/a.jpg", "is not below the document root"),  # .. after a folder
        ("set1/%2E%2E/%2E%2E/outside/a.jpg", "is not below the document root"),  # encoded
        ("set1\\..\\..\\outside\\a.jpg", "is not below the document root"),  # backslashes
        ("..", "is not below the document root"),
    ],
)
def test_urls_label_studio_cannot_serve_are_refused(run, path, message):
    fake = FakeProject()
    result = run(fake, [_task(path)])
    assert result.exit_code == 1 and message in result.output
    assert result.output.count("\n") == 1 and fake.calls == []


def test_other_urls_need_no_storage(run):
    fake = FakeProject(default_config(["object"]))
    task = _task("x")
    task["data"]["image"] = "https://images.example/x.jpg"
    result = run(fake, [task])
    assert result.exit_code == 0, result.output
    assert fake.calls == ["import 1"]


def test_client_calls_name_label_studio_endpoints(monkeypatch):
    from zerolabel.labelstudio.client import LabelStudioClient

    sent: list[tuple[str, str, Any, Any]] = []

    def request(self, method, path, *, params=None, json=None):
        sent.append((method, path, params, json))
        return {"task_count": 1} if path.endswith("/import") else ([] if method == "GET" else {})

    monkeypatch.setattr(LabelStudioClient, "request", request)
    client = LabelStudioClient("http://ls.test", "token")
    client.import_tasks(3, [{"data": {"image": "x"}}])
    client.local_storages(3)
    client.create_local_storage(3, "/data/street", title="zerolabel street")
    assert sent == [
        ("POST", "/api/projects/3/import", None, [{"data": {"image": "x"}}]),
        ("GET", "/api/storages/localfiles", {"project": 3}, None),
        (
            "POST",
            "/api/storages/localfiles",
            None,
            {
                "project": 3,
                "path": "/data/street",
                "use_blob_urls": True,
                "title": "zerolabel street",
            },
        ),
    ]


def test_a_link_out_of_the_document_root_is_refused(run, tmp_path):
    (tmp_path / "escape").symlink_to(tmp_path.parent)
    fake = FakeProject()
    result = run(fake, [_task("escape/photos/a.jpg")])
    assert result.exit_code == 1 and "is not below the document root" in result.output
    assert fake.calls == []
