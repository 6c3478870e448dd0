"""A folder run into a new Label Studio project: import (storage, config, tasks), sheets."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from PIL import Image
from zerolabel.cli.main import main

from tests.servers import ROOT

pytestmark = pytest.mark.e2e

PHOTOS = ("000002.jpg", "000003.jpg", "000005.jpg")


def test_import_a_folder_run_then_draw_the_project_sheets(label_studio, tiny_env, tmp_path):
    ls = label_studio
    folder = ls.document_root / "imported"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(ROOT / "examples" / "voc2007" / "JPEGImages" / name, folder / name)
    env = {**tiny_env, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}
    root = ["--document-root", str(ls.document_root)]
    made = CliRunner().invoke(main, ["predict", str(folder), "-o", str(tmp_path), *root], env=env)
    assert made.exit_code == 0, made.output
    project = int(ls.api("POST", "/api/projects", json={"title": "import"}).json()["id"])

    args = ["import", "--project", str(project), str(tmp_path / "tasks.json"), *root]
    imported = CliRunner().invoke(main, args, env=env)
    assert imported.exit_code == 0, imported.output
    storages = ls.api("GET", f"/api/storages/localfiles?project={project}").json()
    assert [s["path"] for s in storages] == [str(folder)]
    assert len(ls.predictions(project)) == len(PHOTOS)
    url = json.loads((tmp_path / "tasks.json").read_text())[0]["data"]["image"]
    assert ls.api("GET", url).content[:2] == b"\xff\xd8"  # the JPEG is served to the project

    again = CliRunner().invoke(main, args, env=env)
    assert again.exit_code == 0 and "nothing to import" in again.output
    assert len(ls.predictions(project)) == len(PHOTOS)

    sheets = tmp_path / "sheets"
    drawn = CliRunner().invoke(
        main, ["clusters-sheet", "--project", str(project), "-o", str(sheets)], env=env
    )
    assert drawn.exit_code == 0, drawn.output
    assert Image.open(sheets / "object.png").size[0] > 0
