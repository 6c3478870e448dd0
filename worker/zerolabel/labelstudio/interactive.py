"""Label Studio's interactive pre-annotation requests -> prompts (standard library only).

With "Use for interactive preannotations" on for a connection and a smart tool in the labeling
config, Label Studio 1.23 sends every smart region an annotator draws to the backend's
``/predict`` at once, as the request's ``params.context``::

    {"result": [{"id": "Kx3", "type": "keypointlabels", "from_name": "click", "to_name": "image",
                 "original_width": 500, "original_height": 375, "image_rotation": 0,
                 "value": {"x": 41.2, "y": 63.0, "width": 0.8, "keypointlabels": ["object"]},
                 "is_positive": true}]}

(its frontend posts ``{"task", "context": {"result": [...]}}`` to
``/api/ml/<id>/interactive-annotating``, and Label Studio forwards the context). ``x``, ``y``,
``width`` and ``height`` are percent of the image; a keypoint drawn with Alt held has
``is_positive`` false; a smart rectangle has ``type`` ``rectanglelabels`` and ``width`` and
``height``. Label Studio shows ``results[0].result`` of the answer as suggestions.

The context holds every region of the drawn region's type and label on the image, not only the
one just drawn (recorded payloads: ``tests/data/label_studio/interactive/``): every click on the
object so far, in order, until the annotator accepts the suggestion (which deletes the smart
regions), and regions of other controls of the same type and label (a box accepted earlier).
So the clicks on one object need no memory here; regions of controls that are not smart tools
are left out, and a context with no smart region asks for nothing.

Smart tools are ``<KeyPointLabels>`` and ``<RectangleLabels>``: Label Studio gives every
control a smart variant (with Auto-Annotation on) unless it says ``smart="false"``, so a config
whose outputs should never be taken for prompts marks them so (``examples/
label_config_interactive.xml``)::

    <KeyPointLabels name="click" toName="image" smart="true">
      <Label value="object" smart="true"/>
    </KeyPointLabels>

:func:`read_context` checks a context against the project's labeling config and turns it into a
:class:`~zerolabel.contract.Prompt` in fractions of the image; every refusal is a
``ConfigError`` naming the region and the cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zerolabel.contract import Box, Click, Prompt
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.label_config import parse_config

SMART_TAGS = {"KeyPointLabels": "keypointlabels", "RectangleLabels": "rectanglelabels"}
"""Labeling-config tags that can be smart tools, and the result type of their regions."""

MAX_REGIONS = 32
"""Regions one context may hold (Label Studio sends the few drawn together)."""


@dataclass(frozen=True)
class SmartTool:
    """A smart ``<KeyPointLabels>`` or ``<RectangleLabels>`` of the labeling config."""

    tag: str
    name: str
    to_names: tuple[str, ...]
    labels: tuple[str, ...]


@dataclass(frozen=True)
class Interaction:
    """One interactive request: what was drawn, on which ``<Image>``, with which label.

    Attributes:
        prompt: the clicks and/or rectangle drawn with smart tools, in fractions of the image;
            None when the context holds no smart region (an ordinary region was drawn).
        to_name: the ``<Image>`` they were drawn on.
        label: the label chosen on the smart tool (None when it has no labels).
    """

    prompt: Prompt | None
    to_name: str
    label: str | None


def smart_tools(label_config: str) -> dict[str, SmartTool]:
    """The smart tools of a labeling config, by ``name``: its ``<KeyPointLabels>`` and
    ``<RectangleLabels>`` but those marked ``smart="false"`` (Label Studio's default).

    Raises:
        ConfigError: the config does not parse.
    """
    tools: dict[str, SmartTool] = {}
    for element in parse_config(label_config).iter():
        if element.tag not in SMART_TAGS:
            continue
        labels = [child for child in element if child.tag == "Label"]
        smart = not _false(element.get("smart")) or any(_true(c.get("smart")) for c in labels)
        name = element.get("name")
        if not smart or not name:
            continue
        to_names = tuple(n.strip() for n in (element.get("toName") or "").split(",") if n.strip())
        values = tuple(str(c.get("value")) for c in labels if c.get("value") is not None)
        tools[name] = SmartTool(element.tag, name, to_names, values)
    return tools


def read_context(context: Any, label_config: str, task_id: Any = None) -> Interaction | None:
    """The interaction a ``/predict`` context holds; None when it holds none (a plain predict).

    Args:
        context: ``params.context`` of the request, as Label Studio sends it.
        label_config: the project's labeling config.
        task_id: the task's id, for messages.

    Raises:
        ConfigError: the labeling config has no smart tool, or a region is not one Label Studio
            sends for a smart tool of this config: another tool, an unknown label, a point or
            rectangle outside the image, a rotated image, a missing value (the message names the
            task, the region and the cause).
    """
    if context is None:
        return None
    if not isinstance(context, dict):
        raise ConfigError(f"task {task_id}: the interactive context must be a JSON object")
    items = context.get("result")
    if items is None or items == []:
        return None
    where = f"task {task_id}"
    if not isinstance(items, list) or len(items) > MAX_REGIONS:
        raise ConfigError(
            f"{where}: the interactive context's 'result' must be a list of at most "
            f"{MAX_REGIONS} regions"
        )
    tools = smart_tools(label_config)
    controls = _control_names(label_config)
    if not tools:
        raise ConfigError(
            f'{where}: the labeling config has no smart tool: add a <KeyPointLabels smart="true">'
            ' or <RectangleLabels smart="true"> for the image (see examples/)'
        )
    clicks: list[Click] = []
    box: Box | None = None
    to_names: set[str] = set()
    labels: list[str] = []
    for index, item in enumerate(items):
        drawn_with = item.get("from_name") if isinstance(item, dict) else None
        if drawn_with not in tools and drawn_with in controls:
            continue  # another control's region Label Studio sends along: not a prompt
        read = _Region(item, index, where, tools)
        to_names.add(read.to_name)
        if read.label is not None:
            labels.append(read.label)
        if read.click is not None:
            clicks.append(read.click)
        elif read.box is not None:
            box = read.box  # the last rectangle drawn
    if len(to_names) > 1:
        raise ConfigError(f"{where}: the regions were drawn on several images: {sorted(to_names)}")
    if not to_names:
        return Interaction(None, "", None)
    try:
        prompt = Prompt(tuple(clicks), box)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Interaction(prompt, to_names.pop(), labels[-1] if labels else None)


def _control_names(label_config: str) -> set[str]:
    """The names of every tag of the config (its controls and objects)."""
    return {name for e in parse_config(label_config).iter() if (name := e.get("name"))}


class _Region:
    """One region of a context, checked (see :func:`read_context`)."""

    def __init__(self, item: Any, index: int, where: str, tools: dict[str, SmartTool]) -> None:
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: region {index} of the context is not a JSON object")
        name = f"{where}, region {item.get('id') or index}"
        tool = tools.get(str(item.get("from_name")))
        if tool is None:
            known = ", ".join(sorted(tools))
            raise ConfigError(
                f"{name}: {item.get('from_name')!r} is not a control of the labeling config "
                f"(its smart tools: {known})"
            )
        kind = item.get("type")
        if kind != SMART_TAGS[tool.tag]:
            raise ConfigError(
                f"{name}: type {kind!r}, but {tool.name!r} draws {SMART_TAGS[tool.tag]}"
            )
        self.to_name = str(item.get("to_name"))
        if self.to_name not in tool.to_names:
            raise ConfigError(
                f"{name}: drawn on {self.to_name!r}, which {tool.name!r} does not label "
                f"(toName {','.join(tool.to_names)!r})"
            )
        if _number(item.get("image_rotation", 0), name, "image_rotation") % 360:
            raise ConfigError(f"{name}: the image is rotated; rotate it back to click on objects")
        value = item.get("value")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: the region has no 'value' object")
        self.label = _label(value, kind, tool, name)
        x = _percent(value.get("x"), name, "x")
        y = _percent(value.get("y"), name, "y")
        self.click: Click | None = None
        self.box: Box | None = None
        if kind == "keypointlabels":
            positive = item.get("is_positive", True)
            if not isinstance(positive, bool):
                raise ConfigError(f"{name}: is_positive must be true or false, got {positive!r}")
            self.click = Click(x, y, positive)
        else:
            x1 = x + _percent(value.get("width"), name, "width")
            y1 = y + _percent(value.get("height"), name, "height")
            if x1 > 1.0 + 1e-6 or y1 > 1.0 + 1e-6:
                raise ConfigError(f"{name}: the rectangle reaches outside the image")
            if x1 <= x or y1 <= y:
                raise ConfigError(f"{name}: the rectangle is empty")
            self.box = Box(x, y, min(x1, 1.0), min(y1, 1.0))


def _label(value: dict[str, Any], kind: str, tool: SmartTool, name: str) -> str | None:
    chosen = value.get(kind) or value.get("labels") or []
    if not isinstance(chosen, list) or not all(isinstance(label, str) for label in chosen):
        raise ConfigError(f"{name}: its labels must be a list of strings")
    if not chosen:
        return None
    label = str(chosen[0])
    if tool.labels and label not in tool.labels:
        raise ConfigError(
            f"{name}: label {label!r} is not one of {tool.name!r}'s labels "
            f"({', '.join(tool.labels)})"
        )
    return label


def _percent(raw: Any, name: str, field: str) -> float:
    """A percent of the image in [0, 100], as a fraction."""
    number = _number(raw, name, field)
    if not 0.0 <= number <= 100.0:
        raise ConfigError(f"{name}: {field} {number:g}% lies outside the image")
    return number / 100.0


def _number(raw: Any, name: str, field: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(f"{name}: {field} must be a number, got {raw!r}")
    return float(raw)


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _false(value: str | None) -> bool:
    return (value or "").strip().lower() == "false"
