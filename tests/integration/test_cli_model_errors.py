"""Command errors found only once a (tiny random) model has run: still one ``Error:`` line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner
from zerolabel.cli.main import main

VOC = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"


def _box(n: int) -> dict:
    return {
        "id": f"zl-test-{n}-box",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 10 * n, "y": 10, "width": 20, "height": 30, "rectanglelabels": ["o"]},
    }


def test_cluster_k_above_the_objects_described_names_both_numbers(tiny_env, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(VOC / "000001.jpg", photos / "a.jpg")
    (photos / "b.jpg").write_bytes(b"")  # its objects get no descriptor
    tasks = [
        {
            "id": i + 1,
            "data": {"image": f"/data/local-files/?d={name}"},
            "predictions": [{"result": [_box(0), _box(1)]}],
        }
        for i, name in enumerate(["a.jpg", "b.jpg"])
    ]
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(json.dumps(tasks))
    args = ["cluster", str(tasks_file), "-k", "3", "--document-root", str(photos)]
    result = CliRunner().invoke(
        main,
        [*args, "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out")],
        env=tiny_env,
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: 2 objects (2 more had no descriptor) cannot make 3 clusters: lower k to at most 2"
    ]
    assert not (tmp_path / "out").exists()
