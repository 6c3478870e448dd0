"""One object is one thing to the annotator, through a real Label Studio's edits and exports.

zerolabel writes its predictions into a project with boxes and brushes (the example config):
once as one region per object (the default) and once as a box and a mask per object (shapes
"both"). Annotations are made from them as Label Studio's editor stores them (the prediction's
result with its region ids kept, the edited regions changed, the deleted ones gone, and the
prediction as ``parent_prediction``), then read back through Label Studio's export API and
``zerolabel export``: exactly the annotator's objects come out, nothing stale.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools.coco import COCO
from zerolabel.cli.main import main
from zerolabel.contract import Box, DiscoveryResult, DiscoverySpec, Region
from zerolabel.formats.export import read_ls_export
from zerolabel.geometry import box_iou, mask_to_box, rle_encode
from zerolabel.labelstudio.brush import brush_rle_encode
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.regions import (
    AGREE_IOU,
    BOX_KEPT,
    DELETED,
    STALE_BOX,
    STALE_MASK,
)
from zerolabel.labelstudio.tasks import task as ls_task

from tests.ls_server import EXAMPLE_CONFIG

pytestmark = pytest.mark.e2e

H, W = 120, 160
FOLDER = "object-edits"


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:H, :W]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


FIRST = _ellipse(60, 50, 30, 35)  # the object every edit is made to
SECOND = np.zeros((H, W), dtype=bool)
SECOND[20:50, 110:150] = True  # accepted as is everywhere
FIRST_REDRAWN = FIRST & (np.arange(W)[None, :] >= 40)  # its left part erased with the brush


def _box(mask: np.ndarray) -> Box:
    box = mask_to_box(mask)
    assert box is not None
    return box


FIRST_BOX = _box(FIRST)
SHRUNK = Box(FIRST_BOX.x0, FIRST_BOX.y0, FIRST_BOX.x0 + 0.7 * FIRST_BOX.width, FIRST_BOX.y1)


@dataclass(frozen=True)
class Case:
    """A task: the form its prediction was written in, the annotator's edit of the first
    object, and the objects (box, mask or None) the annotation holds."""

    name: str
    shapes: str
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    expected: list[tuple[Box, np.ndarray | None]]


def _first(item: dict[str, Any]) -> bool:
    return bool(item["id"].rsplit("-", 1)[0].endswith("-0"))


def _accept(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return result


def _delete(kind: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda result: [i for i in result if not (_first(i) and i["type"] == kind)]


def _changed(item: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """The item as the editor saves an edited region: same id, new value."""
    return item | {"value": item["value"] | value, "origin": "prediction-changed"}


def _shrink_box(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    width = 100 * SHRUNK.width / W  # the right edge dragged in by 30 %
    return [
        _changed(i, {"width": width}) if _first(i) and i["type"] == "rectanglelabels" else i
        for i in result
    ]


def _redraw_mask(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rle = brush_rle_encode(FIRST_REDRAWN)
    return [
        _changed(i, {"rle": rle}) if _first(i) and i["type"] == "brushlabels" else i for i in result
    ]


BOTH_KEPT = [(FIRST_BOX, FIRST), (_box(SECOND), SECOND)]
CASES = [
    Case("both-accepted", "both", _accept, BOTH_KEPT),
    Case("both-box-deleted", "both", _delete("rectanglelabels"), BOTH_KEPT[1:]),
    Case("both-box-shrunk", "both", _shrink_box, [(SHRUNK, None), BOTH_KEPT[1]]),
    Case(
        "both-mask-edited",
        "both",
        _redraw_mask,
        [(_box(FIRST_REDRAWN), FIRST_REDRAWN), BOTH_KEPT[1]],
    ),
    Case("both-mask-deleted", "both", _delete("brushlabels"), [(FIRST_BOX, None), BOTH_KEPT[1]]),
    Case("one-accepted", "auto", _accept, BOTH_KEPT),
    Case("one-deleted", "auto", _delete("brushlabels"), BOTH_KEPT[1:]),
    Case(
        "one-mask-edited",
        "auto",
        _redraw_mask,
        [(_box(FIRST_REDRAWN), FIRST_REDRAWN), BOTH_KEPT[1]],
    ),
]
RESOLVED = {DELETED: 1, STALE_MASK: 1, STALE_BOX: 1, BOX_KEPT: 1}
"""The rules the "both" tasks need, once each; the one-region tasks need none."""


def _prediction_task(case: Case, url: str) -> dict[str, Any]:
    """An importable task carrying zerolabel's prediction, in the case's form."""
    target = find_target(EXAMPLE_CONFIG, shapes=case.shapes)
    version = DiscoverySpec(method="maskcut", shapes=target.shapes).model_version()
    regions = [Region(_box(m), 0.7, "maskcut", rle_encode(m)) for m in (FIRST, SECOND)]
    result = DiscoveryResult(url, (H, W), regions, version)
    made = ls_task(result, target, url)
    made["data"]["case"] = case.name
    return made


@pytest.fixture(scope="module")
def project(label_studio) -> tuple[Any, int, dict[str, str]]:
    """A project whose tasks were annotated from zerolabel's predictions, one case each."""
    ls = label_studio
    folder = ls.document_root / FOLDER
    folder.mkdir(exist_ok=True)
    tasks = []
    for case in CASES:
        Image.new("RGB", (W, H), (90, 120, 150)).save(folder / f"{case.name}.png")
        tasks.append(_prediction_task(case, f"/data/local-files/?d={FOLDER}/{case.name}.png"))
    project_id = ls.create_project("object edits")
    ls.add_local_storage(project_id, folder)
    ls.api("POST", f"/api/projects/{project_id}/import", json=tasks)
    by_case = {case.name: case for case in CASES}
    for prediction in ls.predictions(project_id):
        data = ls.api("GET", f"/api/tasks/{prediction['task']}").json()["data"]
        _annotate(ls, prediction, by_case[data["case"]])
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token}
    return ls, project_id, env


def _annotate(ls: Any, prediction: dict[str, Any], case: Case) -> None:
    """What the editor submits for an annotation made from the prediction (ids kept)."""
    accepted = [i | {"origin": "prediction"} for i in copy.deepcopy(prediction["result"])]
    body = {
        "result": case.edit(accepted),
        "parent_prediction": prediction["id"],
        "lead_time": 12.5,
    }
    ls.api("POST", f"/api/tasks/{prediction['task']}/annotations", json=body)


def _objects_of(coco: COCO, image_id: int) -> list[tuple[list[float], np.ndarray | None]]:
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    return sorted(
        (
            (a["bbox"], coco.annToMask(a).astype(bool) if a.get("segmentation") else None)
            for a in anns
        ),
        key=lambda o: o[0],
    )


def _check_coco(out: Path) -> None:
    """coco.json holds exactly every case's expected objects, masks pixel for pixel."""
    coco = COCO()
    coco.dataset = json.loads((out / "coco.json").read_text())
    coco.createIndex()
    names = {Path(image["file_name"]).stem: image["id"] for image in coco.imgs.values()}
    assert set(names) == {case.name for case in CASES}
    for case in CASES:
        found = _objects_of(coco, names[case.name])
        expected = sorted(
            (([b.x0, b.y0, b.width, b.height], m) for b, m in case.expected), key=lambda o: o[0]
        )
        assert len(found) == len(expected), case.name
        for (bbox, mask), (want_box, want_mask) in zip(found, expected, strict=True):
            assert bbox == pytest.approx(want_box, abs=1e-6), case.name
            assert (mask is None) == (want_mask is None), case.name
            if mask is not None:
                np.testing.assert_array_equal(mask, want_mask, err_msg=case.name)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["box_mask_conflicts"] == RESOLVED


def test_the_shrunk_box_still_overlaps_its_stale_mask() -> None:
    """The shrink the issue names: its IoU with the mask passes the 0.5 pairing."""
    assert box_iou(SHRUNK, FIRST_BOX) == pytest.approx(0.7)
    assert box_iou(SHRUNK, FIRST_BOX) >= AGREE_IOU


def test_label_studio_keeps_the_predictions_region_ids_in_annotations(project) -> None:
    ls, project_id, _ = project
    predicted = {p["task"]: {i["id"] for i in p["result"]} for p in ls.predictions(project_id)}
    plain = ls.api(
        "GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON"}
    ).json()
    assert len(plain) == len(CASES)
    for task in plain:
        (annotation,) = task["annotations"]
        ids = {item["id"] for item in annotation["result"]}
        assert ids and ids <= predicted[task["id"]]
        assert annotation["parent_prediction"] in task["predictions"]  # listed by id only
    one_region = [t for t in plain if t["data"]["case"].startswith("one-")]
    read = read_ls_export(one_region)  # needs no record: one region is one object
    assert read.box_mask_conflicts == {}
    for image in read.images:
        (case,) = [c for c in CASES if image.file_name.endswith(f"/{c.name}.png")]
        assert sorted(o.box.to_list() for o in image.objects) == sorted(
            b.to_list() for b, _ in case.expected
        )


def test_zerolabel_export_of_the_project_holds_exactly_the_annotators_objects(
    project, tmp_path
) -> None:
    ls, project_id, env = project
    out = tmp_path / "export"
    exported = CliRunner().invoke(
        main, ["export", "--project", str(project_id), "-o", str(out), "-f", "coco"], env=env
    )
    assert exported.exit_code == 0, exported.output
    _check_coco(out)


def test_label_studios_export_with_predictions_reads_the_same(project, tmp_path) -> None:
    ls, project_id, env = project
    body = {"title": "edits", "serialization_options": {"predictions": {"only_id": False}}}
    snapshot = ls.api("POST", f"/api/projects/{project_id}/exports/", json=body).json()
    detail = ls.api("GET", f"/api/projects/{project_id}/exports/{snapshot['id']}").json()
    assert detail["status"] == "completed", detail
    tasks = ls.api(
        "GET",
        f"/api/projects/{project_id}/exports/{snapshot['id']}/download",
        params={"exportType": "JSON"},
    ).json()
    assert all(isinstance(p, dict) for t in tasks for p in t["predictions"])
    export_file = tmp_path / "label-studio-export.json"
    export_file.write_text(json.dumps(tasks))
    out = tmp_path / "export"
    exported = CliRunner().invoke(
        main, ["export", "--from-file", str(export_file), "-o", str(out), "-f", "coco"], env=env
    )
    assert exported.exit_code == 0, exported.output
    _check_coco(out)
