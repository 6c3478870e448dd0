"""Label Studio's interactive contexts -> prompts, and every refusal naming its cause."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from zerolabel.contract import Box, Click
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.interactive import read_context, smart_tools

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
  <RectangleLabels name="box" toName="image" smart="false"><Label value="object"/></RectangleLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="object" smart="true"/>
  </KeyPointLabels>
  <RectangleLabels name="drag" toName="image" smart="true"><Label value="object"/></RectangleLabels>
</View>"""

KEYPOINT: dict[str, Any] = {
    "id": "Kx3",
    "type": "keypointlabels",
    "from_name": "click",
    "to_name": "image",
    "original_width": 500,
    "original_height": 375,
    "image_rotation": 0,
    "value": {"x": 40.0, "y": 60.0, "width": 0.8, "keypointlabels": ["object"]},
    "is_positive": True,
}
RECTANGLE: dict[str, Any] = {
    "id": "Rc1",
    "type": "rectanglelabels",
    "from_name": "drag",
    "to_name": "image",
    "original_width": 500,
    "original_height": 375,
    "image_rotation": 0,
    "value": {
        "x": 10.0,
        "y": 20.0,
        "width": 50.0,
        "height": 40.0,
        "rotation": 0,
        "rectanglelabels": ["object"],
    },
}


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    item = copy.deepcopy(base)
    for key, value in changes.items():
        if key in item["value"] and key not in item:
            item["value"][key] = value
        else:
            item[key] = value
    return item


def test_smart_tools_are_keypoints_and_rectangles_not_marked_smart_false_as_in_label_studio():
    tools = smart_tools(CONFIG)
    assert set(tools) == {"click", "drag"}
    plain = CONFIG.replace(' smart="false"', "")  # Label Studio's default: smart
    assert set(smart_tools(plain)) == {"click", "drag", "box"}
    assert tools["click"].labels == ("object",) and tools["click"].to_names == ("image",)


def test_a_positive_click_is_a_click_in_fractions_of_the_image():
    interaction = read_context({"result": [KEYPOINT]}, CONFIG, 7)
    assert interaction is not None
    assert interaction.prompt.clicks == (Click(0.4, 0.6, True),)
    assert interaction.prompt.box is None
    assert (interaction.to_name, interaction.label) == ("image", "object")


def test_an_alt_click_is_a_background_click():
    interaction = read_context({"result": [_with(KEYPOINT, is_positive=False)]}, CONFIG, 7)
    assert interaction is not None and interaction.prompt.clicks == (Click(0.4, 0.6, False),)


def test_a_smart_rectangle_is_a_box_in_fractions():
    interaction = read_context({"result": [RECTANGLE]}, CONFIG, 7)
    assert interaction is not None and interaction.prompt.clicks == ()
    box = interaction.prompt.box
    assert box is not None
    assert box.to_list() == pytest.approx(Box(0.1, 0.2, 0.6, 0.6).to_list())


@pytest.mark.parametrize("context", [None, {"result": []}, {}])
def test_no_regions_is_a_plain_predict(context):
    assert read_context(context, CONFIG, 7) is None


@pytest.mark.parametrize(
    ("item", "cause"),
    [
        pytest.param(_with(KEYPOINT, x=101.0), "x 101% lies outside the image", id="outside"),
        pytest.param(_with(KEYPOINT, y=-3.0), "y -3% lies outside the image", id="above"),
        pytest.param(_with(KEYPOINT, x="40"), "x must be a number", id="text"),
        pytest.param(
            _with(KEYPOINT, keypointlabels=["cat"]),
            "label 'cat' is not one of 'click''s labels (object)",
            id="unknown-label",
        ),
        pytest.param(
            _with(KEYPOINT, from_name="pen"),
            "'pen' is not a control of the labeling config (its smart tools: click, drag)",
            id="unknown-control",
        ),
        pytest.param(
            _with(KEYPOINT, to_name="other"), "drawn on 'other', which 'click'", id="no-image"
        ),
        pytest.param(_with(KEYPOINT, image_rotation=90), "the image is rotated", id="rotated"),
        pytest.param(_with(KEYPOINT, value=None), "has no 'value' object", id="no-value"),
        pytest.param(
            _with(KEYPOINT, is_positive="yes"), "is_positive must be true or false", id="flag"
        ),
        pytest.param(
            _with(RECTANGLE, width=95.0), "the rectangle reaches outside the image", id="wide"
        ),
        pytest.param(_with(RECTANGLE, height=0.0), "the rectangle is empty", id="empty"),
        pytest.param(_with(KEYPOINT, type="rectanglelabels"), "but 'click' draws", id="type"),
        pytest.param("click", "region 0 of the context is not a JSON object", id="not-object"),
    ],
)
def test_a_region_label_studio_would_not_send_is_refused_naming_task_region_and_cause(item, cause):
    with pytest.raises(ConfigError) as refused:
        read_context({"result": [item]}, CONFIG, 7)
    assert str(refused.value).startswith("task 7")
    assert cause in str(refused.value)


def test_a_config_without_smart_tools_is_refused_with_what_to_add():
    plain = CONFIG.replace('smart="true"', 'smart="false"')
    with pytest.raises(ConfigError, match='has no smart tool: add a <KeyPointLabels smart="true">'):
        read_context({"result": [KEYPOINT]}, plain, 7)


@pytest.mark.parametrize(
    ("context", "cause"),
    [
        ("clicks", "must be a JSON object"),
        ({"result": "clicks"}, "must be a list of at most 32 regions"),
        ({"result": [KEYPOINT] * 33}, "must be a list of at most 32 regions"),
    ],
)
def test_a_malformed_context_is_refused(context, cause):
    with pytest.raises(ConfigError, match=cause):
        read_context(context, CONFIG, 7)


def test_regions_go_to_the_outputs_never_to_a_smart_rectangle_listed_first():
    from zerolabel.labelstudio.label_config import find_target

    smart_first = CONFIG.replace(
        '<RectangleLabels name="drag" toName="image" smart="true"><Label value="object"/>'
        "</RectangleLabels>",
        "",
    ).replace(
        '<Image name="image" value="$image"/>',
        '<Image name="image" value="$image"/>\n  <RectangleLabels name="drag" toName="image"'
        ' smart="true"><Label value="object"/></RectangleLabels>',
    )
    assert smart_first.index('name="drag"') < smart_first.index('name="box"')
    target = find_target(smart_first, shapes="both")
    assert (target.box_from_name, target.brush_from_name) == ("box", "mask")


def test_regions_of_other_controls_label_studio_sends_along_are_no_prompt():
    accepted = _with(RECTANGLE, from_name="box", id="accepted")  # a box accepted earlier
    interaction = read_context({"result": [accepted, KEYPOINT]}, CONFIG, 7)
    assert interaction is not None and interaction.prompt is not None
    assert interaction.prompt.clicks == (Click(0.4, 0.6, True),) and interaction.prompt.box is None
    ordinary = read_context({"result": [accepted]}, CONFIG, 7)  # an ordinary box was drawn
    assert ordinary is not None and ordinary.prompt is None


RECORDED = Path(__file__).resolve().parents[1] / "data" / "label_studio" / "interactive"


def _recorded(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return body


def test_label_studios_recorded_click_then_alt_click_is_the_objects_clicks_in_order():
    positive = _recorded("keypoint_positive")
    first = read_context(positive["params"]["context"], positive["label_config"], 1)
    assert first is not None and first.prompt is not None
    (click,) = first.prompt.clicks
    assert click.positive and click.x == pytest.approx(0.49956, abs=1e-4)
    negative = _recorded("keypoint_negative")
    both = read_context(negative["params"]["context"], negative["label_config"], 1)
    assert both is not None and both.prompt is not None
    assert [c.positive for c in both.prompt.clicks] == [True, False]  # every click so far
    assert both.prompt.clicks[0] == click and (both.label, both.to_name) == ("object", "image")


def test_label_studios_recorded_rectangles_are_the_smart_one_only():
    drawn = _recorded("rectangle")
    alone = read_context(drawn["params"]["context"], drawn["label_config"], 1)
    assert alone is not None and alone.prompt is not None and alone.prompt.box is not None
    assert alone.prompt.box.x0 == pytest.approx(0.2006, abs=1e-3)
    later = _recorded("rectangle_after_accepting")  # the accepted box comes along first
    after = read_context(later["params"]["context"], later["label_config"], 1)
    assert after is not None and after.prompt == alone.prompt


def test_the_recorded_bodies_are_what_predict_reads():
    from zerolabel_backend.protocol import predict_request

    for name in ("keypoint_positive", "keypoint_negative", "rectangle"):
        asked = predict_request(_recorded(name))
        assert len(asked.tasks) == 1 and asked.context == _recorded(name)["params"]["context"]
