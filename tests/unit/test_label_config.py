"""Labeling config -> Target: which image, controls and labels pre-annotations are written to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.tasks import Target

IMAGE = '<Image name="image" value="$image"/>'


def _box(labels: str = '<Label value="object"/>', name: str = "label", to: str = "image") -> str:
    return f'<RectangleLabels name="{name}" toName="{to}">{labels}</RectangleLabels>'


def _brush(labels: str = '<Label value="object"/>', name: str = "mask", to: str = "image") -> str:
    return f'<BrushLabels name="{name}" toName="{to}">{labels}</BrushLabels>'


def _labels(*values: str) -> str:
    return "".join(f'<Label value="{value}" background="#ff0000"/>' for value in values)


def _view(*tags: str) -> str:
    return "<View>" + "".join(tags) + "</View>"


VALID = [
    pytest.param(
        _view(IMAGE, _box()),
        {},
        Target("image", "image", "label", None, "object", brush_label=None),
        id="boxes-only",
    ),
    pytest.param(
        _view(IMAGE, _brush()),
        {},
        Target("image", "image", None, "mask", "object", brush_label="object"),
        id="masks-only",
    ),
    pytest.param(
        _view(IMAGE, _box(), _brush()),
        {},
        Target("image", "image", "label", "mask", "object", brush_label="object", shapes="mask"),
        id="boxes-and-masks",
    ),
    pytest.param(
        '<View><Header value="Find things"/><View style="display: flex">'
        '<View><Image name="img" value="$photo" zoom="true"/></View>'
        f"<View><View>{_box(name='boxes', to='img')}</View></View></View></View>",
        {},
        Target("img", "photo", "boxes", None, "object", brush_label=None),
        id="nested-views",
    ),
    pytest.param(
        _view(
            '<Image name="ref" value="$reference"/>',
            '<Image name="scene" value="$scene"/>',
            _box(to="scene"),
        ),
        {},
        Target("scene", "scene", "label", None, "object", brush_label=None),
        id="several-images-first-targeted",
    ),
    pytest.param(
        _view(
            '<Image name="left" value="$left"/>',
            '<Image name="right" value="$right"/>',
            _box(name="left_boxes", to="left"),
            _box(name="right_boxes", to="right"),
            _brush(to="right"),
        ),
        {"image_name": "right"},
        Target(
            "right", "right", "right_boxes", "mask", "object", brush_label="object", shapes="mask"
        ),
        id="several-images-by-name",
    ),
    pytest.param(
        _view(
            '<Image name="a" value="$a"/>',
            '<Image name="b" value="$b"/>',
            _box(to="a, b"),
            _brush(to="b,a"),
        ),
        {"image_name": "b"},
        Target("b", "b", "label", "mask", "object", brush_label="object", shapes="mask"),
        id="tonames-list",
    ),
    pytest.param(
        _view(IMAGE, _box(to="other"), _box(name="second")),
        {},
        Target("image", "image", "second", None, "object", brush_label=None),
        id="first-control-pointing-at-image",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "dog", "car")), _brush(_labels("person", "car"))),
        {"label": "car"},
        Target("image", "image", "label", "mask", "car", brush_label="car", shapes="mask"),
        id="label-by-argument",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "Object", "dog"))),
        {},
        Target("image", "image", "label", None, "Object", brush_label=None),
        id="object-like-preferred",
    ),
    pytest.param(
        _view(IMAGE, _brush(_labels("cat", " Foreground "))),
        {},
        Target("image", "image", None, "mask", " Foreground ", brush_label=" Foreground "),
        id="foreground-preferred-value-kept-verbatim",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "dog"))),
        {},
        Target("image", "image", "label", None, "person", brush_label=None),
        id="fallback-first-label",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "dog")), _brush(_labels("blob", "thing"))),
        {},
        Target("image", "image", "label", "mask", "person", brush_label="thing", shapes="mask"),
        id="per-control-labels-default",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("car", "bus")), _brush(_labels("road", "sky"))),
        {"label": "sky"},
        Target("image", "image", "label", "mask", "car", brush_label="sky", shapes="mask"),
        id="per-control-labels-argument-in-brush-only",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("dog", "objects")), _brush(_labels("cat", "dog"))),
        {"label": "dog"},
        Target("image", "image", "label", "mask", "dog", brush_label="dog", shapes="mask"),
        id="argument-beats-object-like",
    ),
    pytest.param(
        _view(IMAGE, _brush(_labels("object")), _box(_labels("person"))),
        {},
        Target("image", "image", "label", "mask", "person", brush_label="object", shapes="mask"),
        id="order-of-tags-does-not-matter",
    ),
]


@pytest.mark.parametrize(("config", "kwargs", "expected"), VALID)
def test_find_target(config: str, kwargs: dict[str, Any], expected: Target) -> None:
    assert find_target(config, **kwargs) == expected


def test_example_config() -> None:
    config = (Path(__file__).resolve().parents[2] / "examples" / "label_config.xml").read_text()
    assert find_target(config) == Target(brush_label="object", shapes="mask")


def test_imports_neither_torch_nor_label_studio_ml() -> None:
    """The web process reads configs: importing the module must stay light."""
    code = (
        "import sys, zerolabel.labelstudio.label_config; "
        "print(sorted({'torch', 'label_studio_ml'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


INVALID = [
    pytest.param(
        "<View><Image name='image' value='$image'></View>",
        {},
        "labeling config is not valid XML: mismatched tag: line 1, column",
        id="bad-xml",
    ),
    pytest.param("  ", {}, "labeling config is empty: set the project's", id="empty"),
    pytest.param(
        _view(_box()),
        {},
        'labeling config has no <Image> tag: add <Image name="image" value="$image"/>',
        id="no-image",
    ),
    pytest.param(
        _view(IMAGE, _box().replace("RectangleLabels", "rectanglelabels")),
        {},
        "labeling config has no <RectangleLabels> or <BrushLabels>: add "
        '<RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>',
        id="no-controls-tags-are-case-sensitive",
    ),
    pytest.param(
        _view(IMAGE, _box(to="photo")),
        {},
        'no <RectangleLabels> or <BrushLabels> points at <Image name="image">: add '
        'toName="image" (<RectangleLabels name="label"> has toName="photo")',
        id="control-points-elsewhere",
    ),
    pytest.param(
        _view('<Image name="a" value="$a"/>', '<Image name="b" value="$b"/>', _brush(to="a")),
        {"image_name": "b"},
        'no <RectangleLabels> or <BrushLabels> points at <Image name="b">: add toName="b"',
        id="named-image-not-targeted",
    ),
    pytest.param(
        _view(IMAGE, _box()),
        {"image_name": "photo"},
        'labeling config has no <Image name="photo">: available: image',
        id="unknown-image-name",
    ),
    pytest.param(
        _view(IMAGE, _box(""), _brush()),
        {},
        '<RectangleLabels name="label"> has no <Label>: add <Label value="object"/> inside it',
        id="empty-labels",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "dog"))),
        {"label": "car"},
        "label 'car' is not in <RectangleLabels name=\"label\">: available: person, dog",
        id="unknown-label",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("person", "dog")), _brush(_labels("dog", "sky"))),
        {"label": "car"},
        'label \'car\' is not in <RectangleLabels name="label"> or <BrushLabels name="mask">: '
        "available: person, dog, sky",
        id="unknown-label-both-controls",
    ),
    pytest.param(
        _view(IMAGE, _box(_labels("Car"))),
        {"label": "car"},
        "did you mean 'Car'?",
        id="label-case-hint",
    ),
    pytest.param(
        _view('<Image name="image" value="image"/>', _box()),
        {},
        "<Image name=\"image\"> value 'image' must reference task data like $image",
        id="value-without-dollar",
    ),
    pytest.param(
        _view('<Image name="image" value="$"/>', _box()),
        {},
        "<Image name=\"image\"> value '$' must reference task data like $image",
        id="bare-dollar",
    ),
    pytest.param(
        _view('<Image value="$image"/>', _box()),
        {},
        '<Image value="$image"> has no name: add name="image" to it',
        id="image-without-name",
    ),
    pytest.param(
        _view(IMAGE, '<BrushLabels toName="image"><Label value="object"/></BrushLabels>'),
        {},
        '<BrushLabels toName="image"> has no name: add name="mask"',
        id="control-without-name",
    ),
]


@pytest.mark.parametrize(("config", "kwargs", "message"), INVALID)
def test_find_target_errors(config: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        find_target(config, **kwargs)
    assert message in str(excinfo.value)


def test_config_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="no <Image> tag"):
        find_target("<View/>")


_IMAGE_AND_BOX = (
    '<Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>'
)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE View [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
            f"<View>{_IMAGE_AND_BOX}<Header value='&b;'/></View>",
            "<!DOCTYPE> or <!ENTITY>",
            id="entity-expansion",
        ),
        pytest.param(
            '<!DOCTYPE View [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            f"<View>{_IMAGE_AND_BOX}<Header value='&x;'/></View>",
            "<!DOCTYPE> or <!ENTITY>",
            id="external-entity",
        ),
        pytest.param(
            "<View>" * 65 + _IMAGE_AND_BOX + "</View>" * 65,
            "more than 64 deep",
            id="deeply-nested",
        ),
        pytest.param(
            f"<View>{_IMAGE_AND_BOX}<Header value='{'x' * 1_000_000}'/></View>",
            "at most 1000000 are accepted",
            id="oversized",
        ),
    ],
)
def test_hostile_configs_are_refused_before_they_cost_anything(config: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        find_target(config)


def test_comments_and_cdata_are_still_accepted() -> None:
    config = f"<View><!-- boxes --><![CDATA[ note ]]>{_IMAGE_AND_BOX}</View>"
    assert find_target(config).box_from_name == "label"
    nested = "<View>" * 62 + _IMAGE_AND_BOX + "</View>" * 62  # <Label> at depth 64
    assert find_target(nested).to_name == "image"
