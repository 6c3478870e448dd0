"""Edits of a labeling config's label values: add, rename, merge (standard library only).

The pseudo-class commands keep a project's ``<RectangleLabels>`` and ``<BrushLabels>`` in step
with the labels its predictions carry. Edits keep the config as its author wrote it as far as
XML allows: comments, processing instructions, the XML declaration, attribute order and the
whitespace between tags stay; a new ``<Label>`` takes the indentation of its siblings. Elements
are written back in ElementTree's serialisation (``<Label value="a" />``), and a config that
needs no change is returned as it came, character for character. Every parse goes through
:func:`~zerolabel.labelstudio.label_config.parse_config` and its limits.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping

from zerolabel.errors import ConfigError
from zerolabel.labelstudio.label_config import BOX_TAG, BRUSH_TAG, parse_config


def add_labels(label_config: str, names: Iterable[str]) -> str:
    """The config with a ``<Label value=...>`` for each name missing from its
    ``<RectangleLabels>`` and ``<BrushLabels>`` controls (existing labels are kept).

    Raises:
        ConfigError: the config is not valid XML or has no such control.
    """
    root = parse_config(label_config, keep_comments=True)
    changed = False
    for control in _controls(root):
        present = {label.get("value") for label in _labels(control)}
        for name in dict.fromkeys(names):
            if name not in present:
                _append(control, ET.Element("Label", {"value": name}))
                changed = True
    return _written(label_config, root) if changed else label_config


def rename_labels(label_config: str, mapping: Mapping[str, str]) -> str:
    """The config with its box and brush labels renamed as ``mapping`` says.

    Renaming is simultaneous (``{"a": "b", "b": "c"}`` is no chain). Labels that end up with
    one name are merged: the ``<Label>`` that already had the name stays (else the first one
    renamed to it), the others are removed, so the control lists each name once. A label
    renamed keeps its other attributes (colour, hotkey...). Running the same mapping again
    changes nothing.

    Raises:
        ConfigError: the config is not valid XML or has no box or brush control.
    """
    root = parse_config(label_config, keep_comments=True)
    changed = False
    for control in _controls(root):
        renamed: list[tuple[ET.Element, str, str]] = []
        for label in _labels(control):
            old = label.get("value")
            if old is not None:
                renamed.append((label, old, mapping.get(old, old)))
        keeper = {new: label for label, old, new in reversed(renamed) if old == new}
        for label, _, new in renamed:
            keeper.setdefault(new, label)
        for label, old, new in renamed:
            if keeper[new] is not label:
                _remove(control, label)
            elif new != old:
                label.set("value", new)
            changed = changed or keeper[new] is not label or new != old
    return _written(label_config, root) if changed else label_config


def default_config(labels: Iterable[str]) -> str:
    """A boxes-and-masks labeling config listing ``labels`` (for folders clustered offline)."""
    items = "".join(f'<Label value="{_xml_attr(name)}"/>' for name in labels)
    return (
        '<View>\n  <Image name="image" value="$image"/>\n'
        f'  <RectangleLabels name="label" toName="image">{items}</RectangleLabels>\n'
        f'  <BrushLabels name="mask" toName="image">{items}</BrushLabels>\n</View>\n'
    )


def _controls(root: ET.Element) -> list[ET.Element]:
    controls = [el for el in root.iter() if el.tag in (BOX_TAG, BRUSH_TAG)]
    if not controls:
        raise ConfigError(
            f"labeling config has no <{BOX_TAG}> or <{BRUSH_TAG}> to hold the labels: add "
            f'<{BOX_TAG} name="label" toName="image"><Label value="object"/></{BOX_TAG}>'
        )
    return controls


def _labels(control: ET.Element) -> list[ET.Element]:
    """The control's ``<Label>`` children, in order."""
    return [child for child in control if child.tag == "Label"]


def _append(control: ET.Element, element: ET.Element) -> None:
    """Append as the last child, indented like the children before it."""
    children = list(control)
    if children:
        last = children[-1]
        element.tail = last.tail  # the whitespace before the closing tag
        last.tail = children[-2].tail if len(children) > 1 else control.text
    control.append(element)


def _remove(control: ET.Element, element: ET.Element) -> None:
    """Remove a child with the whitespace in front of it, keeping the layout of the rest."""
    children = list(control)
    index = children.index(element)
    if index > 0:
        children[index - 1].tail = element.tail
    else:
        control.text = element.tail
    control.remove(element)


def _written(original: str, root: ET.Element) -> str:
    """The edited root, between what the original held before and after its root element
    (an XML declaration, comments, trailing newline)."""
    before, after = _outside_root(original)
    return before + ET.tostring(root, encoding="unicode") + after


def _outside_root(text: str) -> tuple[str, str]:
    """The text before the root element's start tag and after its end (a well-formed config)."""
    start = text.index("<")
    while text.startswith(("<!--", "<?"), start):
        close = "-->" if text.startswith("<!--", start) else "?>"
        start = text.index("<", text.index(close, start) + len(close))
    end = len(text.rstrip())
    while text.endswith(("-->", "?>"), 0, end):
        opening = "<!--" if text.endswith("-->", 0, end) else "<?"
        end = len(text[: text.rindex(opening, 0, end)].rstrip())
    return text[:start], text[end:]


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
