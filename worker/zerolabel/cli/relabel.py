"""``zerolabel relabel``: rename or merge pseudo-classes in the predictions and the config.

Works on a tasks file (folder mode, with the ``label_config.xml`` that ``cluster`` writes beside
it) or on a Label Studio project (``--project``). Running the same mapping twice is a no-op.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from zerolabel.cli.common import (
    ls_client,
    project_tasks,
    read_json,
    read_tasks,
    worker_settings,
    write_json,
)
from zerolabel.cli.options import model_version_option, project_option

CONFIG_FILE = "label_config.xml"
"""The labeling config ``cluster`` writes beside the tasks in folder mode."""


@click.command()
@click.argument("tasks_file", required=False, type=click.Path(exists=True, dir_okay=False))
@project_option
@model_version_option
@click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help='JSON object {"cluster_00": "dog", "cluster_03": "dog", ...}.',
)
@click.option(
    "-o",
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the relabelled tasks [default: overwrite TASKS_FILE].",
)
def relabel(
    tasks_file: str | None,
    project: int | None,
    model_version: str | None,
    mapping_file: str,
    out_file: str | None,
) -> None:
    """Rename or merge pseudo-classes everywhere they are used, from a mapping file.

    The predictions and the labeling config (the project's, or the label_config.xml beside
    TASKS_FILE) are relabelled; a label merged into another leaves the config, whose comments
    and layout are kept. Running the same mapping again changes nothing and says so.
    """
    from zerolabel.loop.pseudo_classes import map_task_labels

    if (tasks_file is None) == (project is None):
        raise click.UsageError("give either TASKS_FILE or --project")
    mapping = read_json(mapping_file)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise click.BadParameter(
            "the mapping must be a JSON object of names", param_hint="--mapping"
        )
    settings = worker_settings()
    client = ls_client(settings) if project is not None else None
    tasks = project_tasks(client, project) if client else read_tasks(str(tasks_file))
    relabelled, carried = map_task_labels(tasks, mapping, model_version=model_version)
    if not carried:
        click.echo(
            "nothing to relabel: the mapping was applied already "
            f"(no region carries {', '.join(mapping) or 'any of its names'})",
            err=True,
        )
    if client is not None and project is not None:
        count = _relabel_project(client, project, tasks, relabelled, mapping, model_version)
        click.echo(f"relabelled {count} prediction(s) in project {project}", err=True)
    else:
        source = Path(str(tasks_file))
        target = Path(out_file) if out_file else source
        _relabel_folder(source, target, relabelled, mapping, changed=bool(carried))


def _relabel_project(
    client: Any,
    project: int,
    tasks: list[dict[str, Any]],
    relabelled: list[dict[str, Any]],
    mapping: dict[str, str],
    model_version: str | None,
) -> int:
    """New names into the config, then the predictions, then merged-away names out of it: the
    project never holds a prediction with a label its config lacks."""
    from zerolabel.labelstudio.config_edit import add_labels, rename_labels
    from zerolabel.loop.pseudo_classes import update_predictions

    config = client.label_config(project)
    widened = add_labels(config, mapping.values())
    if widened != config:
        client.set_label_config(project, widened)
    count = update_predictions(client, tasks, relabelled, model_version)
    final = add_labels(rename_labels(config, mapping), mapping.values())
    if final != widened:
        client.set_label_config(project, final)
    return count


def _relabel_folder(
    source: Path,
    target: Path,
    relabelled: list[dict[str, Any]],
    mapping: dict[str, str],
    *,
    changed: bool,
) -> None:
    """Write the tasks (unless unchanged in place) and the label_config.xml beside ``source``,
    relabelled, beside ``target`` (unless unchanged in place)."""
    from zerolabel.labelstudio.config_edit import add_labels, rename_labels

    in_place = target.resolve() == source.resolve()
    if changed or not in_place:
        write_json(target, relabelled)
        click.echo(f"wrote {target}", err=True)
    config_file = source.parent / CONFIG_FILE
    if not config_file.is_file():
        return
    config = config_file.read_text()
    updated = add_labels(rename_labels(config, mapping), mapping.values())
    written = target.parent / CONFIG_FILE
    if updated != config or written.resolve() != config_file.resolve():
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_text(updated)
        click.echo(f"wrote {written}", err=True)
