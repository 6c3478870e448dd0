"""Label Studio's own references for tests: its brush codec and its task import format."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any


@functools.cache
def load_sdk_brush() -> ModuleType:
    """``label_studio_sdk/converter/brush.py``, Label Studio's reference brush codec.

    Loaded from its file: importing it the usual way first runs the sdk's package init, which
    pulls in nltk and pandas and costs seconds. The module itself needs only numpy and PIL.
    """
    spec = importlib.util.find_spec("label_studio_sdk")  # locates, does not import
    if spec is None or spec.origin is None:
        raise RuntimeError("label-studio-sdk is missing: pip install -e '.[dev]'")
    path = Path(spec.origin).parent / "converter" / "brush.py"
    brush_spec = importlib.util.spec_from_file_location("_ls_sdk_brush", path)
    assert brush_spec is not None and brush_spec.loader is not None
    module = importlib.util.module_from_spec(brush_spec)
    brush_spec.loader.exec_module(module)
    return module


def check_ls_task(data: Any, data_key: str) -> None:
    """Label Studio's importable task format, as far as pre-annotations go."""
    assert isinstance(data, dict) and set(data) == {"data", "predictions"}
    assert isinstance(data["data"], dict) and isinstance(data["data"][data_key], str)
    assert isinstance(data["predictions"], list)
    number: tuple[type, ...] = (int, float)
    for pred in data["predictions"]:
        assert isinstance(pred["model_version"], str) and pred["model_version"]
        assert isinstance(pred["score"], number) and not isinstance(pred["score"], bool)
        assert isinstance(pred["result"], list)
        for item in pred["result"]:
            fields: list[tuple[str, type | tuple[type, ...]]] = [
                ("id", str),
                ("from_name", str),
                ("to_name", str),
                ("type", str),
                ("original_width", int),
                ("original_height", int),
                ("image_rotation", int),
                ("score", number),
                ("value", dict),
            ]
            for key, kind in fields:
                assert isinstance(item[key], kind), (key, item[key])
            value = item["value"]
            if item["type"] == "rectanglelabels":
                for key in ("x", "y", "width", "height", "rotation"):
                    assert isinstance(value[key], number), key
                assert 0 <= value["x"] <= value["x"] + value["width"] <= 100
                assert 0 <= value["y"] <= value["y"] + value["height"] <= 100
                labels = value["rectanglelabels"]
            else:
                assert item["type"] == "brushlabels" and value["format"] == "rle"
                assert all(isinstance(b, int) and 0 <= b <= 255 for b in value["rle"])
                labels = value["brushlabels"]
            assert isinstance(labels, list) and all(isinstance(x, str) for x in labels)


def check_regions(
    result: list[dict[str, Any]], label: str = "object", *, shapes: str = "auto"
) -> None:
    """Pre-annotations as Label Studio stores them, inside the image, with the expected label
    and masks that decode to something: one region per object (shapes "auto": its mask when the
    method's masks follow the image, else its box), or a box and a mask per object (shapes
    "both")."""
    from collections import Counter

    from zerolabel.labelstudio.brush import brush_rle_decode

    kinds = Counter(region["type"] for region in result)
    boxes, masks = kinds["rectanglelabels"], kinds["brushlabels"]
    if shapes == "both":
        assert boxes >= 1 and masks == boxes
    else:
        assert boxes + masks >= 1 and 0 in (boxes, masks)  # one kind of region per object
    for region in result:
        assert region["to_name"] == "image"
        value = region["value"]
        if region["type"] == "rectanglelabels":
            assert region["from_name"] == "label" and value["rectanglelabels"] == [label]
            assert 0 <= value["x"] < value["x"] + value["width"] <= 100 + 1e-6
            assert 0 <= value["y"] < value["y"] + value["height"] <= 100 + 1e-6
        else:
            assert region["from_name"] == "mask" and value["brushlabels"] == [label]
            hw = (region["original_height"], region["original_width"])
            assert brush_rle_decode(value["rle"], hw).any()
