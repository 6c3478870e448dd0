"""Click options shared by several ``zerolabel`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

LOCAL_FILES_PREFIX = "/data/local-files/?d="


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
    "--model-version", default=None, help="Which predictions to use [default: each task's latest]."
)
