"""``zerolabel clusters-sheet``: one PNG of sample crops per pseudo-class, to name them."""

from __future__ import annotations

from pathlib import Path

import click

from zerolabel.cli.common import (
    file_loader,
    ls_client,
    project_tasks,
    read_tasks,
    url_loader,
    worker_settings,
)
from zerolabel.cli.options import local_files_options, model_version_option, project_option


@click.command("clusters-sheet")
@click.argument("tasks_file", required=False, type=click.Path(exists=True, dir_okay=False))
@project_option
@model_version_option
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="zerolabel-sheets",
    show_default=True,
    help="Folder for the sheets, one <cluster>.png each.",
)
@click.option(
    "-n",
    "--samples",
    type=click.IntRange(min=1, max=400),
    default=16,
    show_default=True,
    help="Crops per sheet (a seeded choice when the cluster has more).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tile",
    type=click.IntRange(min=16, max=512),
    default=128,
    show_default=True,
    help="Side in pixels of the square each crop is fitted into.",
)
@local_files_options
def clusters_sheet(
    tasks_file: str | None,
    project: int | None,
    model_version: str | None,
    out_dir: str,
    samples: int,
    seed: int,
    tile: int,
    document_root: str,
    url_prefix: str,
) -> None:
    """Draw sample crops of every pseudo-class, with its name and size, one PNG per cluster.

    Give the tasks.json that `zerolabel cluster` wrote (folder mode) or --project, then write
    the relabel mapping with the sheets in view.
    """
    from zerolabel.loop.sheets import SheetLayout, write_sheets

    if (tasks_file is None) == (project is None):
        raise click.UsageError("give either TASKS_FILE or --project")
    settings = worker_settings()
    client = ls_client(settings) if project is not None else None
    tasks = project_tasks(client, project) if client else read_tasks(str(tasks_file))
    loader = (
        url_loader(settings) if client else file_loader(Path(document_root), url_prefix, settings)
    )
    written = write_sheets(
        tasks,
        loader,
        Path(out_dir),
        layout=SheetLayout(samples=samples, tile=tile),
        seed=seed,
        model_version=model_version,
    )
    if not written:
        raise click.ClickException("no labelled objects in the tasks: run zerolabel cluster first")
    click.echo(f"{len(written)} sheet(s) in {out_dir}", err=True)
    for label, path in written.items():
        click.echo(f"  {label}: {path}", err=True)
