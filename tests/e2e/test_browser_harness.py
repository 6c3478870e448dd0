"""The browser harness against a real Label Studio and a stand-in backend that records what it
is sent: smart keypoints (positive, Alt for negative) and a smart rectangle drawn on the
labeling page reach ``/predict`` as ``params.context``, and the stand-in's fixed object comes
back as suggestions, then as the annotation's regions once accepted and submitted.

The recorded bodies are kept in ``tests/data/label_studio/interactive/`` (see its README);
``ZEROLABEL_RECORD_PAYLOADS=1`` writes them again from this run, otherwise the run is checked
against them: the same fields of the same types.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from zerolabel.labelstudio.brush import brush_rle_decode

from tests.e2e.browser import Annotator, chromium, require_chromium
from tests.e2e.recording_backend import (
    FIXED_BOX,
    FIXED_SCORE,
    PLACEHOLDER,
    RecordingBackend,
    recording_backend,
    redact,
)
from tests.servers import ROOT

pytestmark = pytest.mark.e2e
in_browser = pytest.mark.usefixtures("chromium_ready")  # before Label Studio starts

CONFIG = (ROOT / "examples" / "label_config_interactive.xml").read_text()
PHOTO = ROOT / "examples" / "voc2007" / "JPEGImages" / "000001.jpg"  # 353 x 500
RECORDED = ROOT / "tests" / "data" / "label_studio" / "interactive"
CLICK = (0.5, 0.4)
BACKGROUND = (0.3, 0.35)
DRAG = (0.2, 0.2, 0.7, 0.6)
OUTSIDE = (0.8, 0.8)  # outside the fixed object


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    """Skips (or fails) before Label Studio starts when no browser can run."""
    require_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingBackend]:
    with recording_backend() as backend:
        yield backend


@pytest.fixture(scope="module")
def project(label_studio, recorder: RecordingBackend) -> tuple[int, list[int]]:
    """A project with the interactive example config, two copies of one photo, and the
    stand-in connected with "Use for interactive preannotations" on."""
    ls = label_studio
    body = {"title": "click to an object (recorded)", "label_config": CONFIG}
    project = int(ls.api("POST", "/api/projects", json=body).json()["id"])
    for name in ("first.jpg", "second.jpg"):
        with PHOTO.open("rb") as handle:
            ls.api("POST", f"/api/projects/{project}/import", files={"file": (name, handle)})
    connection = {"project": project, "url": recorder.url, "title": "recorder"}
    ml = ls.api("POST", "/api/ml", json={**connection, "is_interactive": True}).json()
    assert ml["is_interactive"] is True
    tasks = ls.api("GET", f"/api/tasks?project={project}").json()["tasks"]
    return project, sorted(task["id"] for task in tasks)


@pytest.fixture
def annotator(browser, label_studio) -> Iterator[Annotator]:
    person = Annotator(browser, label_studio)
    yield person
    person.close()
    assert person.errors == [], f"the labeling page raised: {person.errors}"


def _shape(value: Any) -> Any:
    """The fields and value types of a JSON value (what a recording must keep)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value  # is_positive's value and empty fields are part of the payload's meaning
    return "number" if isinstance(value, int | float) else type(value).__name__


def _check_recording(name: str, body: dict[str, Any]) -> None:
    path = RECORDED / f"{name}.json"
    redacted = redact(body)
    if os.environ.get("ZEROLABEL_RECORD_PAYLOADS"):
        path.write_text(json.dumps(redacted, indent=2, sort_keys=True) + "\n")
    stored = json.loads(path.read_text())
    changed = f"Label Studio no longer sends {path.name}'s shape"
    assert _shape(stored["params"]) == _shape(redacted["params"]), changed
    assert sorted(stored) == sorted(redacted), changed
    # the task's own lists (drafts, predictions) depend on what was saved meanwhile
    assert [sorted(t) for t in stored["tasks"]] == [sorted(t) for t in redacted["tasks"]], changed


def _context(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["params"]["context"]["result"])


def _fixed_mask_pixels(width: int, height: int) -> int:
    x, y, w, h = FIXED_BOX
    cols = round((x + w) / 100 * width) - round(x / 100 * width)
    rows = round((y + h) / 100 * height) - round(y / 100 * height)
    return cols * rows


@in_browser
def test_clicks_reach_predict_and_the_fixed_object_is_suggested_accepted_and_saved(
    annotator: Annotator, label_studio, recorder: RecordingBackend, project
) -> None:
    project_id, (task, _) = project
    recorder.clear()
    annotator.open(project_id, task)
    annotator.enable_auto_annotation()
    annotator.set_auto_accept(False)

    positive = annotator.click(*CLICK)
    (sent,) = positive.request["context"]["result"]
    assert positive.request["task"] == task
    where = (sent["type"], sent["from_name"], sent["to_name"])
    assert where == ("keypointlabels", "click", "image")
    assert sent["is_positive"] is True and sent["value"]["keypointlabels"] == ["object"]
    assert (sent["original_width"], sent["original_height"]) == (353, 500)
    assert sent["value"]["x"] == pytest.approx(CLICK[0] * 100, abs=0.5)
    assert sent["value"]["y"] == pytest.approx(CLICK[1] * 100, abs=0.5)
    shown = {(s["type"], s["from_name"]) for s in annotator.suggestions()}
    assert shown == {("rectanglelabels", "label"), ("brushlabels", "mask")}
    assert [r["type"] for r in annotator.regions()] == ["keypointlabels"]  # the click itself

    negative = annotator.click(*BACKGROUND, negative=True)
    both = negative.request["context"]["result"]  # the click before goes along
    assert [r["is_positive"] for r in both] == [True, False]
    assert both[1]["value"]["x"] == pytest.approx(BACKGROUND[0] * 100, abs=0.5)
    assert both[1]["value"]["y"] == pytest.approx(BACKGROUND[1] * 100, abs=0.5)
    assert len(annotator.suggestions()) == 2  # replaced, not added

    annotator.accept_suggestions()
    accepted = annotator.regions()
    assert sorted(r["type"] for r in accepted) == ["brushlabels", "rectanglelabels"]
    (box,) = (r for r in accepted if r["type"] == "rectanglelabels")
    assert box["from_name"] == "label" and box["value"]["rectanglelabels"] == ["object"]
    assert box["id"] == negative.result[0]["id"]  # the second answer's object
    value = box["value"]
    drawn = (value["x"], value["y"], value["width"], value["height"])
    assert drawn == pytest.approx(FIXED_BOX)

    # A smart rectangle drawn now is sent with every rectangle of the same label on the
    # image: Label Studio 1.23 picks the regions of a request by type and label only, so the
    # accepted box (from "label", not a smart tool) rides along, before the one just drawn.
    dragged = annotator.drag(DRAG)
    along, rect = dragged.request["context"]["result"]
    assert (along["from_name"], along["id"]) == ("label", box["id"])
    assert (rect["type"], rect["from_name"]) == ("rectanglelabels", "drag")
    annotator.accept_suggestions()

    (stored,) = annotator.submit(task)
    results = stored["result"]
    assert sorted(r["type"] for r in results) == ["brushlabels"] * 2 + ["rectanglelabels"] * 2
    for result in results:
        assert result["from_name"] in ("label", "mask") and result["to_name"] == "image"
        if result["type"] == "brushlabels":
            mask = brush_rle_decode(result["value"]["rle"], (500, 353))
            assert int(np.count_nonzero(mask)) == _fixed_mask_pixels(353, 500)

    bodies = recorder.interactive()
    assert [len(_context(b)) for b in bodies] == [1, 2, 2]
    _check_bodies(bodies, project_id, task)
    names = ("keypoint_positive", "keypoint_negative", "rectangle_after_accepting")
    for name, body in zip(names, bodies, strict=True):
        _check_recording(name, body)


@in_browser
def test_with_auto_accept_a_rectangle_and_a_click_put_the_object_into_the_annotation(
    annotator: Annotator, recorder: RecordingBackend, project
) -> None:
    project_id, (_, task) = project
    recorder.clear()
    annotator.open(project_id, task)
    annotator.enable_auto_annotation()
    annotator.set_auto_accept(True)  # kept in this browser context's storage only

    dragged = annotator.drag(DRAG)
    (rect,) = dragged.request["context"]["result"]
    assert (rect["type"], rect["from_name"]) == ("rectanglelabels", "drag")
    assert rect["value"]["rectanglelabels"] == ["object"] and "is_positive" not in rect
    x0, y0, x1, y1 = (v * 100 for v in DRAG)
    value = rect["value"]
    drawn = (value["x"], value["y"], value["width"], value["height"])
    assert drawn == pytest.approx((x0, y0, x1 - x0, y1 - y0), abs=0.5)
    assert sorted(r["from_name"] for r in dragged.result) == ["label", "mask"]
    assert dragged.response["data"]["score"] == FIXED_SCORE
    assert annotator.suggestions() == []
    placed = sorted((r["type"], r["from_name"]) for r in annotator.regions())
    assert placed == [("brushlabels", "mask"), ("rectanglelabels", "label")]  # no rectangle

    with pytest.raises(AssertionError, match="landed on a region"):
        annotator.click(*CLICK)  # on the accepted object: Label Studio selects it instead
    clicked = annotator.click(*OUTSIDE)  # accepted regions are no keypoints: sent alone
    (sent,) = clicked.request["context"]["result"]
    assert sent["type"] == "keypointlabels" and sent["is_positive"] is True
    assert len(annotator.regions()) == 4 and annotator.suggestions() == []

    bodies = recorder.interactive()
    assert [len(_context(b)) for b in bodies] == [1, 1]
    _check_bodies(bodies, project_id, task)
    _check_recording("rectangle", bodies[0])


def _check_bodies(bodies: list[dict[str, Any]], project_id: int, task: int) -> None:
    """What every interactive /predict carries besides the context."""
    for body in bodies:
        assert [t["id"] for t in body["tasks"]] == [task]
        assert body["project"].startswith(f"{project_id}.")
        assert body["label_config"] == CONFIG.strip()  # as Label Studio stores it
        assert body["params"]["login"] is None and body["params"]["password"] is None


def test_redact_hides_credentials_and_keeps_empty_fields() -> None:
    body = {"params": {"login": "ann", "password": None, "context": {"token": "t", "n": 1}}}
    hidden = {"login": PLACEHOLDER, "password": None, "context": {"token": PLACEHOLDER, "n": 1}}
    assert redact(body) == {"params": hidden}
