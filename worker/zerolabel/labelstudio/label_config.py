"""Label Studio labeling config -> where pre-annotations go (standard library only).

``find_target`` reads the XML a project's labeling interface is written in and picks the
``<Image>`` to label, the first ``<RectangleLabels>`` (boxes) and first ``<BrushLabels>``
(masks) pointing at it, and the label value to write, per control::

    <View>
      <Image name="image" value="$image"/>
      <RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>
      <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
    </View>

gives ``Target(to_name="image", data_key="image", box_from_name="label",
brush_from_name="mask", label="object", brush_label="object", shapes="mask")``: one brush
region per object with a mask (the ``shapes`` option, :func:`resolve_shapes`). Tag names are
case-sensitive, as in Label Studio; layout tags (``View``, ``Header``, ...) may nest to any
depth. Every config that cannot be served raises ``ConfigError`` saying what to add or change.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from zerolabel.errors import ConfigError
from zerolabel.labelstudio.tasks import SHAPES, Target

BOX_TAG = "RectangleLabels"
BRUSH_TAG = "BrushLabels"

OBJECT_LIKE = frozenset({"object", "objects", "thing", "things", "foreground"})
"""Label values (compared stripped and lower-cased) preferred when no label is asked for."""


@dataclass(frozen=True)
class _Control:
    """A ``<RectangleLabels>`` or ``<BrushLabels>`` tag, as far as labeling needs it."""

    tag: str
    name: str
    to_names: tuple[str, ...]  # toName, split on commas
    labels: tuple[str, ...]  # values of its <Label> children, in order

    def __str__(self) -> str:
        return f'<{self.tag} name="{self.name}">'


def find_target(
    label_config: str,
    *,
    label: str | None = None,
    image_name: str | None = None,
    shapes: str = "auto",
    pixel_masks: bool = True,
) -> Target:
    """Where to write boxes and masks in a project with this labeling config.

    Args:
        label_config: the project's labeling config (XML), as ``/setup`` and ``/predict`` send it.
        label: label value to write; must be a ``<Label>`` of the box or brush control. When it
            is missing from one of them, that control gets its own default (see below).
            None picks, per control, a label like "object" (object, objects, thing, things,
            foreground; any case), else the first ``<Label>``. The box control's choice is
            kept for the brush control whenever the brush control has it too.
        image_name: the ``<Image>`` to label when the config has several; None takes the
            first one that a ``<RectangleLabels>`` or ``<BrushLabels>`` points at.
        shapes: the project's ``shapes`` option, one of
            :data:`~zerolabel.labelstudio.tasks.SHAPES` (see :func:`resolve_shapes`).
        pixel_masks: the method's masks follow the image's edges (:func:`resolve_shapes`).

    Returns:
        The target: ``label`` is the box label (the brush label when there is no box
        control), ``brush_label`` the brush label (None without a brush control), and
        ``shapes`` the form objects are sent in.

    Raises:
        ConfigError: the config is not XML, or lacks an image, a control pointing at it, a
            label, the asked-for image or label, or a control the ``shapes`` asked for needs;
            the message says how to fix it.
    """
    root = parse_config(label_config)
    controls = _controls(root)
    image = _pick_image(list(root.iter("Image")), controls, image_name)
    to_name = _image_name(image)
    data_key = _data_key(image, to_name)
    box = _first_control(controls, BOX_TAG, to_name)
    brush = _first_control(controls, BRUSH_TAG, to_name)
    if box is None and brush is None:
        raise _no_control(controls, to_name)
    main_label, brush_label = _pick_labels(box, brush, label)
    return Target(
        to_name=to_name,
        data_key=data_key,
        box_from_name=box.name if box else None,
        brush_from_name=brush.name if brush else None,
        label=main_label,
        brush_label=brush_label,
        shapes=resolve_shapes(
            shapes,
            box=box is not None,
            brush=brush is not None,
            image=to_name,
            pixel_masks=pixel_masks,
        ),
    )


def resolve_shapes(
    shapes: str, *, box: bool, brush: bool, image: str = "image", pixel_masks: bool = True
) -> str:
    """The form objects are sent in (:attr:`Target.shapes`) for a ``shapes`` option.

    ``"auto"`` sends each object as one region: its mask when the config has a brush control
    for the image and the masks follow the image's edges (``pixel_masks``: refined to pixels,
    or a detector's), else its box; a mask cut on the patch grid (LOST's, or TokenCut's
    without refinement) is a staircase of 16-pixel blocks that an annotator would rather fix as
    a box. ``"box"``, ``"mask"`` and ``"both"`` are taken as asked, and
    need the controls they name. With one control for the image every form writes that
    control's shape alone, which is ``"both"``: the form model versions were first made for,
    so such projects keep their versions (``DiscoverySpec.model_version``).

    Args:
        shapes: one of :data:`~zerolabel.labelstudio.tasks.SHAPES`.
        box: the config has a ``<RectangleLabels>`` for the image.
        brush: the config has a ``<BrushLabels>`` for the image.
        image: the image's name, for messages.
        pixel_masks: the masks follow the image's edges (see above); only ``"auto"`` reads it.

    Raises:
        ConfigError: an unknown value, or a control it needs is missing (the message says
            which tag to add, or to use "auto").
    """
    if shapes not in SHAPES:
        raise ConfigError(
            f'shapes must be one of {", ".join(SHAPES)}, got {shapes!r} ("auto": one region '
            "per object, its mask when the config has a <BrushLabels>, else its box)"
        )
    if shapes == "auto":
        if not (box and brush):
            return "both"
        return "mask" if pixel_masks else "box"
    needed = {"box": (BOX_TAG,), "mask": (BRUSH_TAG,), "both": (BOX_TAG, BRUSH_TAG)}[shapes]
    present = {BOX_TAG: box, BRUSH_TAG: brush}
    missing = [tag for tag in needed if not present[tag]]
    if missing:
        tag = missing[0]
        raise ConfigError(
            f'shapes "{shapes}" needs a <{tag} name="{_default_name(tag)}" toName="{image}"> '
            'in the labeling config: add it, or use shapes "auto"'
        )
    return shapes if box and brush else "both"


def control_targets(label_config: str) -> set[tuple[str, str, str]]:
    """``(tag, name, image name)`` of every box and brush control and image it points at, e.g.
    ``("RectangleLabels", "label", "image")``: what a prediction's ``from_name`` and
    ``to_name`` must name.

    Raises:
        ConfigError: the config is not valid XML (or refused, see :func:`parse_config`).
    """
    return {
        (control.tag, control.name, to_name)
        for control in _controls(parse_config(label_config))
        for to_name in control.to_names
    }


def has_labeling_tags(label_config: str) -> bool:
    """Whether the config holds any tag inside its root (Label Studio's default for a new
    project is an empty ``<View></View>``)."""
    return len(parse_config(label_config)) > 0


MAX_CONFIG_CHARS = 1_000_000
"""Longest labeling config accepted (Label Studio's own are a few KB, large taxonomies ~100 KB)."""
MAX_CONFIG_DEPTH = 64
"""Deepest element nesting accepted."""

_DECLARATION = re.compile(r"<!(?!--|\[CDATA\[)")


def parse_config(label_config: str, *, keep_comments: bool = False) -> ET.Element:
    """The root element of the config, parsed defensively.

    A labeling config arrives from the network (``/setup``, ``/predict``), so before any
    parsing its size is bounded, document type and entity declarations are refused (no
    entity expansion, no external entities), and while parsing its nesting depth is bounded.

    Args:
        label_config: the XML text.
        keep_comments: keep comments and processing instructions in the tree (for configs
            that are edited and written back, see :mod:`zerolabel.labelstudio.config_edit`);
            the text is parsed a second time for that, once it passed every check above.
    """
    if not label_config or not label_config.strip():
        raise ConfigError(
            "labeling config is empty: set the project's labeling interface, e.g. "
            '<View><Image name="image" value="$image"/>...</View>'
        )
    if len(label_config) > MAX_CONFIG_CHARS:
        raise ConfigError(
            f"labeling config is {len(label_config)} characters long; at most "
            f"{MAX_CONFIG_CHARS} are accepted"
        )
    if _DECLARATION.search(label_config):
        raise ConfigError(
            "labeling config holds a <!DOCTYPE> or <!ENTITY> declaration; Label Studio configs "
            "need none, and they are refused"
        )
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    depth = 0
    try:
        parser.feed(label_config)
        parser.close()
    except ET.ParseError as err:
        raise ConfigError(f"labeling config is not valid XML: {err}") from err
    for event, element in cast("Iterator[tuple[str, ET.Element]]", parser.read_events()):
        root = element if root is None else root
        depth += 1 if event == "start" else -1
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"labeling config nests elements more than {MAX_CONFIG_DEPTH} deep")
    if root is None:  # expat raises on a document without an element; kept for the type checker
        raise ConfigError("labeling config has no root element")
    if keep_comments:
        builder = ET.TreeBuilder(insert_comments=True, insert_pis=True)
        return ET.fromstring(label_config, parser=ET.XMLParser(target=builder))
    return root


def _controls(root: ET.Element) -> list[_Control]:
    """Every box and brush control, in document order; smart tools (``smart="true"`` on the
    tag or a label: an annotator's prompts for interactive pre-annotation) are inputs, not
    where regions go, and are left out."""
    controls = []
    for element in root.iter():
        if element.tag not in (BOX_TAG, BRUSH_TAG) or _smart(element):
            continue
        to_names = tuple(n.strip() for n in element.get("toName", "").split(",") if n.strip())
        labels = tuple(v for v in (e.get("value") for e in element.iter("Label")) if v)
        controls.append(_Control(str(element.tag), element.get("name", ""), to_names, labels))
    return controls


def _smart(element: ET.Element) -> bool:
    marks = [element.get("smart"), *(label.get("smart") for label in element.iter("Label"))]
    return any((mark or "").strip().lower() == "true" for mark in marks)


def _pick_image(
    candidates: list[ET.Element], controls: list[_Control], image_name: str | None
) -> ET.Element:
    """The ``<Image>`` asked for, else the first one a control points at, else the first."""
    if not candidates:
        raise ConfigError(
            'labeling config has no <Image> tag: add <Image name="image" value="$image"/>'
        )
    if image_name is not None:
        for image in candidates:
            if image.get("name") == image_name:
                return image
        names = ", ".join(image.get("name", "?") for image in candidates)
        raise ConfigError(f'labeling config has no <Image name="{image_name}">: available: {names}')
    targeted = {name for control in controls for name in control.to_names}
    for image in candidates:
        if image.get("name") in targeted:
            return image
    return candidates[0]  # nothing points at any image: the caller reports what to add


def _image_name(image: ET.Element) -> str:
    """The ``name`` of an ``<Image>``, which controls' ``toName`` refers to."""
    name = image.get("name", "").strip()
    if not name:
        value = image.get("value", "")
        raise ConfigError(f'<Image value="{value}"> has no name: add name="image" to it')
    return name


def _data_key(image: ET.Element, name: str) -> str:
    """The task data key an ``<Image value="$key">`` reads its URL from."""
    value = image.get("value", "").strip()
    if not value.startswith("$") or len(value) < 2:
        example = f"${value}" if value.isidentifier() else "$image"
        raise ConfigError(
            f'<Image name="{name}"> value {value!r} must reference task data like {example}'
        )
    return value[1:]


def _first_control(controls: list[_Control], tag: str, to_name: str) -> _Control | None:
    """The first control of this tag pointing at the image; it must have a name."""
    for control in controls:
        if control.tag == tag and to_name in control.to_names:
            if not control.name:
                raise ConfigError(
                    f'<{tag} toName="{to_name}"> has no name: add name="{_default_name(tag)}"'
                )
            return control
    return None


def _default_name(tag: str) -> str:
    """The control name zerolabel's example config uses for this tag."""
    return "label" if tag == BOX_TAG else "mask"


def _no_control(controls: list[_Control], to_name: str) -> ConfigError:
    """The error for an image that no box or brush control points at."""
    if not controls:
        return ConfigError(
            f"labeling config has no <{BOX_TAG}> or <{BRUSH_TAG}>: add "
            f'<{BOX_TAG} name="label" toName="{to_name}"><Label value="object"/></{BOX_TAG}>'
        )
    elsewhere = "; ".join(f'{c} has toName="{",".join(c.to_names)}"' for c in controls)
    return ConfigError(
        f'no <{BOX_TAG}> or <{BRUSH_TAG}> points at <Image name="{to_name}">: '
        f'add toName="{to_name}" ({elsewhere})'
    )


def _pick_labels(
    box: _Control | None, brush: _Control | None, label: str | None
) -> tuple[str, str | None]:
    """The label for the box control (brush control if no box) and for the brush control."""
    present = [control for control in (box, brush) if control is not None]
    for control in present:
        if not control.labels:
            raise ConfigError(f'{control} has no <Label>: add <Label value="object"/> inside it')
    if label is not None and not any(label in control.labels for control in present):
        raise _unknown_label(label, present)
    chosen = label if label is not None else _default_label(present[0])
    picks = [chosen if chosen in c.labels else _default_label(c) for c in present]
    return picks[0], (picks[-1] if brush is not None else None)


def _default_label(control: _Control) -> str:
    """The control's first object-like label, else its first label."""
    for value in control.labels:
        if value.strip().lower() in OBJECT_LIKE:
            return value
    return control.labels[0]


def _unknown_label(label: str, controls: list[_Control]) -> ConfigError:
    """The error for a ``label`` argument that no control offers."""
    available = list(dict.fromkeys(v for control in controls for v in control.labels))
    where = " or ".join(str(control) for control in controls)
    message = f"label {label!r} is not in {where}: available: {', '.join(available)}"
    near = [v for v in available if v.strip().lower() == label.strip().lower()]
    if near:
        message += f" (label values are case-sensitive: did you mean {near[0]!r}?)"
    return ConfigError(message)
