"""One object, one Label Studio region: the form objects are sent in, per labeling config and
``shapes`` option, and the model_version that names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from zerolabel.cli.main import main
from zerolabel.cli.options import tasks_shapes
from zerolabel.contract import Box, DiscoveryResult, DiscoverySpec, Region
from zerolabel.errors import ConfigError
from zerolabel.geometry import mask_to_box, rle_encode
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.labelstudio.regions import object_id, object_key, read_objects
from zerolabel.labelstudio.tasks import Target, prediction
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

H, W = 40, 60
IMAGE = '<Image name="image" value="$image"/>'
BOX = '<RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>'
BRUSH = '<BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>'
CONFIGS = {
    "box-only": f"<View>{IMAGE}{BOX}</View>",
    "brush-only": f"<View>{IMAGE}{BRUSH}</View>",
    "box-and-brush": f"<View>{IMAGE}{BOX}{BRUSH}</View>",
}


def _result() -> DiscoveryResult:
    """Two objects: one with a mask (its box is the mask's), one without."""
    mask = np.zeros((H, W), dtype=bool)
    mask[5:20, 10:30] = True
    box = mask_to_box(mask)
    assert box is not None
    regions = [
        Region(box, 0.9, "maskcut", rle_encode(mask)),
        Region(Box(35.0, 22.0, 55.0, 38.0), 0.4, "maskcut"),
    ]
    return DiscoveryResult("a.png", (H, W), regions, "v1")


def _sent(target: Target) -> list[tuple[int, str]]:
    """(object index, region type) of every item the prediction holds, in order."""
    keys = {object_id("v1", i): i for i in range(2)}
    return [
        (keys[object_key(item["id"])], item["type"])
        for item in prediction(_result(), target)["result"]
    ]


MASKED_AS_BRUSH = [(0, "brushlabels"), (1, "rectanglelabels")]
BOXES = [(0, "rectanglelabels"), (1, "rectanglelabels")]
BRUSHES = [(0, "brushlabels")]
BOTH = [(0, "rectanglelabels"), (0, "brushlabels"), (1, "rectanglelabels")]


@pytest.mark.parametrize(
    ("config", "shapes", "sent"),
    [
        pytest.param("box-and-brush", "auto", MASKED_AS_BRUSH, id="both-controls-auto"),
        pytest.param("box-and-brush", "mask", MASKED_AS_BRUSH, id="both-controls-mask"),
        pytest.param("box-and-brush", "box", BOXES, id="both-controls-box"),
        pytest.param("box-and-brush", "both", BOTH, id="both-controls-both"),
        pytest.param("box-only", "auto", BOXES, id="box-only-auto"),
        pytest.param("box-only", "box", BOXES, id="box-only-box"),
        pytest.param("brush-only", "auto", BRUSHES, id="brush-only-auto"),
        pytest.param("brush-only", "mask", BRUSHES, id="brush-only-mask"),
    ],
)
def test_each_config_and_option_sends_the_objects_in_its_form(
    config: str, shapes: str, sent: list[tuple[int, str]]
) -> None:
    assert _sent(find_target(CONFIGS[config], shapes=shapes)) == sent


def test_an_object_sent_as_one_region_is_read_back_as_it_was_found() -> None:
    result = _result()
    items = prediction(result, find_target(CONFIGS["box-and-brush"]))["result"]
    objects = read_objects(items, (H, W))
    assert [(o.box, o.mask) for o in objects] == [(r.box, r.mask) for r in result.regions]


@pytest.mark.parametrize(
    ("config", "shapes", "missing"),
    [
        pytest.param("box-only", "mask", "<BrushLabels", id="mask-without-brush"),
        pytest.param("box-only", "both", "<BrushLabels", id="both-without-brush"),
        pytest.param("brush-only", "box", "<RectangleLabels", id="box-without-rectangle"),
    ],
)
def test_a_form_needs_the_controls_it_names(config: str, shapes: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=f'shapes "{shapes}" needs a {missing}.*"auto"'):
        find_target(CONFIGS[config], shapes=shapes)


@pytest.mark.parametrize("bad", ["masks", "", None, 3, ["mask"]])
def test_the_shapes_option_is_checked_where_it_enters(bad: Any) -> None:
    with pytest.raises(ConfigError, match='"shapes" must be one of "auto", "box", "mask", "both"'):
        ProjectOptions.parse({"shapes": bad})
    with pytest.raises(ConfigError, match="shapes must be one of auto, box, mask, both"):
        find_target(CONFIGS["box-and-brush"], shapes=str(bad))
    with pytest.raises(ValueError, match="shapes must be one of box, mask, both"):
        Target(shapes=str(bad))
    with pytest.raises(ConfigError, match="shapes must be one of box, mask, both"):
        DiscoverySpec(shapes=str(bad))


def test_the_option_is_parsed_with_the_others() -> None:
    options = ProjectOptions.parse('{"method": "maskcut", "shapes": "both", "label": "object"}')
    assert options.shapes == "both" and options.label == "object"
    assert ProjectOptions.parse(None).shapes == "auto"


def _version(config: str, extra: dict[str, Any]) -> str:
    service = PredictionService(BackendSettings(), redis=_NoRedis())  # type: ignore[arg-type]
    return service.model_version(CONFIGS[config], ProjectOptions.parse(extra))


class _NoRedis:
    """Stands in for Redis: planning a project never touches it."""


@pytest.mark.parametrize(
    ("method", "auto_form"),
    [
        pytest.param("maskcut", "mask", id="maskcut"),  # masks refined to pixels
        pytest.param("lost", "box", id="lost"),  # a patch-grid mask: sent as its box
    ],
)
def test_the_model_version_changes_exactly_when_what_is_written_changes(
    method: str, auto_form: str
) -> None:
    def version(config: str, **extra: Any) -> str:
        return _version(config, {"method": method, **extra})

    both = version("box-and-brush", shapes="both")
    masks = version("box-and-brush", shapes="mask")
    boxes = version("box-and-brush", shapes="box")
    assert len({both, masks, boxes}) == 3  # three forms, three versions
    assert version("box-and-brush") == {"mask": masks, "box": boxes}[auto_form]
    # Boxes only: what a box-only project writes, named as before.
    assert boxes == version("box-only") == version("box-only", shapes="box")
    assert version("brush-only") == version("brush-only", shapes="mask")
    assert version("box-and-brush", shapes="box") == version("box-and-brush", masks=False)


@pytest.mark.parametrize(
    ("options", "form"),
    [
        pytest.param({"method": "maskcut"}, "mask", id="maskcut-refined"),
        pytest.param({"method": "promerge"}, "mask", id="promerge-refined"),
        pytest.param({"method": "maskcut", "refine": False}, "box", id="maskcut-on-the-grid"),
        pytest.param({"method": "tokencut"}, "box", id="tokencut-on-the-grid"),
        pytest.param({"method": "tokencut", "refine": True}, "mask", id="tokencut-refined"),
        pytest.param({"method": "lost"}, "box", id="lost"),
    ],
)
def test_auto_sends_a_brush_only_for_masks_that_follow_the_image(
    options: dict[str, Any], form: str
) -> None:
    service = PredictionService(BackendSettings(), redis=_NoRedis())  # type: ignore[arg-type]
    target, spec = service.plan(CONFIGS["box-and-brush"], ProjectOptions.parse(options))
    assert target.shapes == spec.shapes == form
    assert spec.masks == (form == "mask")  # masks are computed only when they are sent


def test_the_forms_that_write_as_before_keep_their_versions() -> None:
    spec = DiscoverySpec(method="maskcut")
    assert spec.shapes == "both"
    written_as_before = [
        DiscoverySpec(method="maskcut", masks=False, shapes=form) for form in ("box", "mask")
    ]
    assert {s.model_version() for s in written_as_before} == {
        DiscoverySpec(method="maskcut", masks=False).model_version()
    }
    assert DiscoverySpec(method="maskcut", shapes="mask").model_version() != spec.model_version()


def test_the_plan_computes_masks_only_for_a_form_that_sends_them() -> None:
    service = PredictionService(BackendSettings(), redis=_NoRedis())  # type: ignore[arg-type]
    config = CONFIGS["box-and-brush"]
    for shapes, masks in (("auto", True), ("both", True), ("box", False)):
        options = ProjectOptions.parse({"method": "maskcut", "shapes": shapes})
        target, spec = service.plan(config, options)
        assert (spec.masks, spec.shapes) == (masks, target.shapes)


@pytest.mark.parametrize(
    ("shapes", "masks", "form"),
    [
        pytest.param("auto", True, "mask", id="auto"),
        pytest.param("auto", False, "both", id="auto-no-masks"),
        pytest.param("box", True, "box", id="box"),
        pytest.param("box", False, "both", id="box-no-masks"),
        pytest.param("both", True, "both", id="both"),
    ],
)
def test_predict_resolves_its_shapes_option(shapes: str, masks: bool, form: str) -> None:
    assert tasks_shapes(shapes, masks=masks) == form


@pytest.mark.parametrize("shapes", ["mask", "both"])
def test_predict_refuses_masks_it_does_not_compute(shapes: str) -> None:
    with pytest.raises(click.BadParameter, match="--no-masks computes none"):
        tasks_shapes(shapes, masks=False)


def test_predict_refuses_the_combination_before_loading_a_model(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 24)).save(image)
    args = ["predict", str(image), "--no-masks", "--shapes", "both", "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(main, args, env={"ZEROLABEL_OFFLINE": "true"})
    assert result.exit_code == 2, result.output
    assert "--no-masks computes none" in result.output
    assert not (tmp_path / "o").exists()
