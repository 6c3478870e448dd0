"""``zerolabel eval`` and ``export`` of a project where most tasks are not annotated: one
summary line (count and first task ids) instead of one warning per task; each task at debug."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from zerolabel.cli.main import main
from zerolabel.formats.dataset import SkippedTask
from zerolabel.formats.reader import summarize_skipped

W, H = 200, 100
ANNOTATED = {3, 11, 20}
TASKS = range(1, 41)  # 40 tasks, 37 of them never annotated


def _rect(region_id: str) -> dict[str, Any]:
    return {
        "id": region_id,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {"x": 10, "y": 10, "width": 40, "height": 50, "rectanglelabels": ["object"]},
    }


def _task(task_id: int) -> dict[str, Any]:
    prediction = {"id": 100 + task_id, "model_version": "v1", "score": 0.8}
    prediction["result"] = [_rect(f"zl-abc-{task_id}-box") | {"score": 0.8}]
    annotations = [{"id": task_id, "result": [_rect("a")]}] if task_id in ANNOTATED else []
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/photo-{task_id}.jpg"},
        "annotations": annotations,
        "predictions": [prediction],
    }


@pytest.fixture
def export_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith(("ZEROLABEL_", "LABEL_STUDIO_")):
            monkeypatch.delenv(name)
    path = tmp_path / "export.json"
    path.write_text(json.dumps([_task(i) for i in TASKS]))
    return path


def _reader_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "zerolabel.formats.reader" and r.levelno == level
    ]


def _check_one_summary(caplog: pytest.LogCaptureFixture) -> None:
    warnings = _reader_records(caplog, logging.WARNING)
    assert warnings == [
        "37 of 40 task(s) not read from the annotations: tasks 1, 2, 4, 5, 6 and 32 more: "
        "no annotation (zerolabel -v lists each)"
    ]
    each = _reader_records(caplog, logging.DEBUG)
    assert len(each) == 37 and each[0] == "task 1 skipped: no annotation"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["eval", "--from-file"], id="eval"),
        pytest.param(["export", "-f", "coco", "--from-file"], id="export"),
    ],
)
def test_unannotated_tasks_make_one_warning_with_the_count_and_first_ids(
    command, export_file, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG, logger="zerolabel")
    args = [*command, str(export_file)]
    if command[0] == "export":
        args += ["-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    _check_one_summary(caplog)
    assert "task 1 skipped" not in result.output
    if command[0] == "export":
        coco = json.loads((tmp_path / "out" / "coco.json").read_text())
        assert len(coco["images"]) == len(ANNOTATED)
    else:
        assert "CorLoc" in result.output


def test_the_summary_groups_reasons_commonest_first_and_counts_the_rest():
    skipped = [SkippedTask(i, "no annotation") for i in range(10)]
    skipped += [SkippedTask(20, "all annotations cancelled"), SkippedTask(21, "odd 1")]
    skipped += [SkippedTask(22, "odd 2"), SkippedTask(23, "odd 2"), SkippedTask(24, "odd 3")]
    assert summarize_skipped(skipped) == (
        "tasks 0, 1, 2, 3, 4 and 5 more: no annotation; tasks 22, 23: odd 2; "
        "task 20: all annotations cancelled; 2 more task(s) for 2 other reason(s)"
    )
