"""Click options shared by several ``zerolabel`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from zerolabel.contract import SHAPE_FORMS
from zerolabel.methods import PRESETS
from zerolabel.sites import LOCAL_FILES_PATH

LOCAL_FILES_PREFIX = f"{LOCAL_FILES_PATH}?d="


def local_files_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--url-prefix`` and ``--document-root``: how task image URLs name local files."""
    func = click.option(
        "--document-root",
        type=click.Path(file_okay=False),
        default=".",
        show_default=True,
        help="Image URLs are paths relative to this folder (Label Studio's "
        "LOCAL_FILES_DOCUMENT_ROOT).",
    )(func)
    return click.option(
        "--url-prefix",
        default=LOCAL_FILES_PREFIX,
        show_default=True,
        help="Prefix of task image URLs (Label Studio local files by default).",
    )(func)


project_option = click.option(
    "--project",
    type=int,
    default=None,
    help="Label Studio project id (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY).",
)

model_version_option = click.option(
    "--model-version",
    default=None,
    help="Which predictions to use, by model version [default: the latest].",
)


def weights_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-b/--backbone`` and ``-c/--checkpoint``: the ViT and its weights (else the settings)."""
    func = click.option(
        "-c",
        "--checkpoint",
        type=click.Path(dir_okay=False),
        default=None,
        help="Local weights file (DINO .pth, DoRA checkpoint, timm .safetensors) "
        "[default: ZEROLABEL_CHECKPOINT].",
    )(func)
    return click.option(
        "-b",
        "--backbone",
        default=None,
        help="dino_vits16 (default), dino_vits8, dino_vitb16, dino_vitb8, dinov2_vits14, "
        "dora_vits16 or any timm ViT name [default: ZEROLABEL_BACKBONE].",
    )(func)


preset_option = click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="default",
    show_default=True,
    help="Input sizing: default (this product's: longer side capped) or paper (the method's "
    "authors': full resolution, DSS cut to whole patches, MaskCut and ProMerge 480x480); "
    "--max-side or --square replaces its size.",
)

shapes_option = click.option(
    "--shapes",
    type=click.Choice(("auto", *SHAPE_FORMS)),
    default="auto",
    show_default=True,
    help="How tasks.json sends an object to Label Studio: auto = one region, its mask when "
    "it follows the image (refined, or a detector's), else its box; box; mask; both = a box "
    "and a mask, linked by their ids.",
)


def tasks_shapes(shapes: str, *, masks: bool, pixel_masks: bool = True) -> str:
    """The form tasks.json sends objects in, for ``--shapes`` (its labeling config has both a
    ``<RectangleLabels>`` and a ``<BrushLabels>``, as ``examples/label_config.xml``);
    ``pixel_masks``: the method's masks follow the image's edges (what ``auto`` sends as
    brushes, see :func:`~zerolabel.labelstudio.label_config.resolve_shapes`).

    Raises:
        click.BadParameter: ``mask`` or ``both`` with ``--no-masks``.
    """
    from zerolabel.labelstudio.label_config import resolve_shapes

    if not masks and shapes in ("mask", "both"):
        raise click.BadParameter(
            f"{shapes!r} sends masks, and --no-masks computes none: drop one of them",
            param_hint="--shapes",
        )
    return resolve_shapes(shapes, box=True, brush=masks, pixel_masks=pixel_masks)
