"""``zerolabel import``: a folder run's tasks, with their predictions, into a Label Studio project.

``zerolabel predict`` names each image ``/data/local-files/?d=<path below --document-root>``.
Label Studio serves such a URL only to a project holding a local-files storage whose folder
contains the file, so the import makes one for the folder holding the images (unless one of
the project's storages covers it), makes room in the labeling config for the predictions'
labels, then posts the tasks. Tasks whose image is in the project already are skipped, so an
import can be run again.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import click

from zerolabel.cli.common import image_url, ls_client, read_tasks, worker_settings
from zerolabel.cli.options import local_files_options
from zerolabel.progress import stage, track

_CONTROL_TAGS = {"rectanglelabels": "RectangleLabels", "brushlabels": "BrushLabels"}
Control = tuple[str, str, str]  # (tag, from_name, to_name)


@click.command("import")
@click.argument("tasks_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--project", type=int, required=True, help="Label Studio project id.")
@local_files_options
def import_(tasks_file: str, project: int, document_root: str, url_prefix: str) -> None:
    """Import the tasks.json of `zerolabel predict` (with its predictions) into a project.

    Give the --document-root and --url-prefix predict was given: the document root must be
    Label Studio's LOCAL_FILES_DOCUMENT_ROOT, as the server sees it. A local-files storage is
    created for the images' folder when the project has none covering it.
    """
    tasks = read_tasks(tasks_file)
    client = ls_client(worker_settings())
    folder = storage_folder(tasks, Path(document_root), url_prefix)
    listed = track(client.tasks(project), f"reading project {project}", unit="task")
    present = {_url(task) for task in listed}
    new = [task for task in tasks if _url(task) not in present]
    if folder is not None and ensure_storage(client, project, folder):
        click.echo(f"created a local-files storage for {folder} in project {project}", err=True)
    if ensure_labels(client, project, new):
        click.echo(f"added the predictions' labels to project {project}'s config", err=True)
    skipped = len(tasks) - len(new)
    if skipped:
        click.echo(f"skipped {skipped} task(s) whose image is in project {project}", err=True)
    if not new:
        click.echo(f"nothing to import: every task is in project {project} already", err=True)
        return
    with stage(f"importing {len(new)} task(s) into project {project}"):
        reply = client.import_tasks(project, new)
    click.echo(
        f"imported {reply.get('task_count', len(new))} task(s) with "
        f"{reply.get('prediction_count', '?')} prediction(s) into project {project}",
        err=True,
    )


def storage_folder(tasks: list[dict[str, Any]], document_root: Path, url_prefix: str) -> str | None:
    """The absolute folder a local-files storage must cover for the tasks' local-file URLs:
    the document root joined with the deepest folder holding every image; None when no URL
    has the prefix (images served some other way).

    Raises:
        ValueError: an image outside the document root (predict then writes its absolute
            path) or directly in it (Label Studio refuses a storage of the root itself).
    """
    root = document_root.resolve()
    relative = []
    for task in tasks:
        url = image_url(task)
        if not url.startswith(url_prefix):
            continue
        path = posixpath.normpath(unquote(url[len(url_prefix) :]).replace("\\", "/"))
        outside = posixpath.isabs(path) or path == ".." or path.startswith("../")
        if outside or not (root / path).resolve().is_relative_to(root):
            raise ValueError(
                f"task {task.get('id')}: image {path} is not below the document root: run "
                "predict with --document-root set to Label Studio's LOCAL_FILES_DOCUMENT_ROOT"
            )
        relative.append(posixpath.dirname(path))
    if not relative:
        return None
    common = posixpath.commonpath(relative)
    if common in ("", "."):
        raise ValueError(
            f"images lie directly in the document root {document_root}: Label Studio serves "
            "local files only from a subfolder of it; move them into one and predict again"
        )
    return str(root.joinpath(*common.split("/")))


def ensure_storage(client: Any, project: int, folder: str) -> bool:
    """Create a local-files storage for ``folder`` unless one of the project's covers it;
    returns whether one was created."""
    for storage in client.local_storages(project):
        path = str(storage.get("path") or "").rstrip("/\\")
        if path and (folder == path or folder.startswith(path + os.sep)):
            return False
    client.create_local_storage(project, folder, title=f"zerolabel {os.path.basename(folder)}")
    return True


def ensure_labels(client: Any, project: int, tasks: list[dict[str, Any]]) -> bool:
    """Make the project's config hold the controls and labels the predictions use (a new
    project's empty config becomes the boxes-and-masks one); returns whether it changed.

    Raises:
        ConfigError: a prediction names a control (``from_name``, ``to_name``) the config lacks.
    """
    from zerolabel.errors import ConfigError
    from zerolabel.labelstudio.config_edit import add_labels, default_config
    from zerolabel.labelstudio.label_config import control_targets, has_labeling_tags

    used, labels = _prediction_controls(tasks)
    if not used:
        return False
    config = client.label_config(project)
    updated = add_labels(config, labels) if has_labeling_tags(config) else default_config(labels)
    missing = sorted(used - control_targets(updated))
    if missing:
        named = ", ".join(f'<{tag} name="{name}" toName="{to}">' for tag, name, to in missing)
        raise ConfigError(
            f"project {project}'s labeling config has no {named}, which the predictions are "
            "written for: add it, or predict again for this config"
        )
    if updated == config:
        return False
    client.set_label_config(project, updated)
    return True


def _prediction_controls(
    tasks: list[dict[str, Any]],
) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(tag, from_name, to_name) of every box and brush item of the predictions, and their
    labels in order of appearance."""
    used: set[Control] = set()
    labels: dict[str, None] = {}
    for task in tasks:
        for prediction in task.get("predictions") or []:
            for item in prediction.get("result") or [] if isinstance(prediction, dict) else []:
                kind = str(item.get("type"))
                if kind not in _CONTROL_TAGS:
                    continue
                tag = _CONTROL_TAGS[kind]
                used.add((tag, str(item.get("from_name")), str(item.get("to_name"))))
                labels.update(dict.fromkeys(item.get("value", {}).get(kind) or []))
    return used, list(labels)


def _url(task: dict[str, Any]) -> str | None:
    try:
        return image_url(task)
    except ValueError:
        return None
