"""Click to an object, as an annotator does it: Label Studio's labeling page in Chromium, the
real backend, Redis and a worker.

With "Use for interactive preannotations" on for the zerolabel connection and the smart tools
of ``examples/label_config_interactive.xml``, a click with the smart keypoint on the dog of a
VOC photo comes back as a brush mask and its box, suggested on the annotation; an Alt+click
(background) inside that mask carves it: the mask that replaces it has fewer pixels. Accepted
and submitted, the annotation holds that object: one mask and its box, from the outputs.

The project does not pre-label tasks on opening ("Use predictions to prelabel tasks" off):
regions already on the image catch clicks (Label Studio selects them), so the first click of
this test would land on the batch pass's own box.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from zerolabel.labelstudio.brush import brush_rle_decode

from tests.e2e.browser import Annotator, Answer, chromium, require_chromium
from tests.e2e.stack import VOC, Stack, backend_stack, connect
from tests.servers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chromium_ready")]
logger = logging.getLogger(__name__)

CONFIG = (ROOT / "examples" / "label_config_interactive.xml").read_text()
PHOTO = "000001.jpg"  # 353 x 500: a dog (x 48-195, y 240-371) in a person's arms
SIZE = (353, 500)
DOG = (121.5 / 353, 305.5 / 500)  # the centre of the dog's box, fractions of the image


@pytest.fixture(scope="module")
def stack(label_studio, tiny_env, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("click-to-object")
    with backend_stack(label_studio, tiny_env, tmp, wait_s="60") as running:
        yield running


@pytest.fixture(scope="session")
def chromium_ready() -> None:
    """Skips (or fails) before Label Studio starts when no browser can run."""
    require_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def task(label_studio, stack: Stack) -> tuple[int, int]:
    """A project with the interactive config and one photo, connected for interactive
    pre-annotation; (project, task)."""
    ls = label_studio
    body = {
        "title": "click to an object",
        "label_config": CONFIG,
        "show_collab_predictions": False,  # no pre-labels under the clicks
    }
    project = int(ls.api("POST", "/api/projects", json=body).json()["id"])
    with (VOC / PHOTO).open("rb") as handle:
        ls.api("POST", f"/api/projects/{project}/import", files={"file": (PHOTO, handle)})
    ml, _ = connect(ls, project, stack.url, is_interactive=True)
    assert ml["is_interactive"] is True
    (found,) = ls.api("GET", f"/api/tasks?project={project}").json()["tasks"]
    return project, int(found["id"])


@pytest.fixture
def annotator(browser, label_studio) -> Iterator[Annotator]:
    person = Annotator(browser, label_studio)
    yield person
    person.close()
    assert person.errors == [], f"the labeling page raised: {person.errors}"


def _object(answer: Answer) -> tuple[dict[str, Any], dict[str, Any]]:
    """The returned object: its brush region and its box region."""
    assert answer.response.get("errors") is None, answer.response
    by_type = {region["type"]: region for region in answer.result}
    assert sorted(r["type"] for r in answer.result) == ["brushlabels", "rectanglelabels"], (
        answer.response
    )
    return by_type["brushlabels"], by_type["rectanglelabels"]


def _mask(region: dict[str, Any]) -> npt.NDArray[np.bool_]:
    width, height = region["original_width"], region["original_height"]
    assert (width, height) == SIZE
    return brush_rle_decode(region["value"]["rle"], (height, width))


def _inside(mask: npt.NDArray[np.bool_], box: dict[str, Any]) -> None:
    """The box is the mask's bounding box (percent of the image, to a pixel)."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    value = box["value"]
    assert value["x"] == pytest.approx(cols.min() / width * 100, abs=100 / width)
    assert value["y"] == pytest.approx(rows.min() / height * 100, abs=100 / height)
    assert value["x"] + value["width"] == pytest.approx((cols.max() + 1) / width * 100, abs=0.5)
    assert value["y"] + value["height"] == pytest.approx((rows.max() + 1) / height * 100, abs=0.5)


def _background_point(mask: npt.NDArray[np.bool_], click: tuple[float, float]) -> tuple[float, ...]:
    """A pixel of the mask far from the positive click (at the 90th percentile of the mask's
    distances from it, so inside the mask rather than on its rim), in fractions of the image."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    distance = np.hypot(cols + 0.5 - click[0] * width, rows + 0.5 - click[1] * height)
    pick = int(np.argsort(distance)[int(0.9 * (len(distance) - 1))])
    assert distance[pick] >= 32, "the returned mask is too small to click inside it apart"
    return (cols[pick] + 0.5) / width, (rows[pick] + 0.5) / height


def test_a_click_returns_the_object_and_an_alt_click_inside_it_carves_it(
    annotator: Annotator, task: tuple[int, int]
) -> None:
    project, task_id = task
    annotator.open(project, task_id)
    annotator.enable_auto_annotation()
    annotator.set_auto_accept(False)

    first = annotator.click(*DOG)
    brush, box = _object(first)
    assert (brush["from_name"], box["from_name"]) == ("mask", "label")
    assert brush["value"]["brushlabels"] == ["object"]
    assert box["value"]["rectanglelabels"] == ["object"]
    mask = _mask(brush)
    x, y = int(DOG[0] * SIZE[0]), int(DOG[1] * SIZE[1])
    assert mask[y, x], "the clicked pixel is not in the returned mask"
    _inside(mask, box)
    shown = sorted((s["type"], s["from_name"]) for s in annotator.suggestions())
    assert shown == [("brushlabels", "mask"), ("rectanglelabels", "label")]

    inside = _background_point(mask, DOG)
    second = annotator.click(*inside, negative=True)
    sent = second.request["context"]["result"]
    assert [r["is_positive"] for r in sent] == [True, False]
    carved_brush, carved_box = _object(second)
    carved = _mask(carved_brush)
    assert 0 < int(carved.sum()) < int(mask.sum())
    assert not carved[int(inside[1] * SIZE[1]), int(inside[0] * SIZE[0])]
    assert carved[y, x], "the positive click fell out of the carved mask"
    _inside(carved, carved_box)
    assert len(annotator.suggestions()) == 2  # the carved object replaced the first
    logger.info(  # shown with --log-cli-level=INFO; never asserted
        "click %.2f s (%d mask pixels), background click %.2f s (%d)",
        first.seconds,
        mask.sum(),
        second.seconds,
        carved.sum(),
    )

    annotator.accept_suggestions()
    (stored,) = annotator.submit(task_id)
    kept = sorted(stored["result"], key=lambda r: r["type"])
    assert [(r["type"], r["from_name"]) for r in kept] == [
        ("brushlabels", "mask"),
        ("rectanglelabels", "label"),
    ]  # the keypoints are gone, the object stays
    assert np.array_equal(_mask(kept[0]), carved)
    fields = ("x", "y", "width", "height")
    saved, answered = kept[1]["value"], carved_box["value"]
    assert [saved[f] for f in fields] == pytest.approx([answered[f] for f in fields])
