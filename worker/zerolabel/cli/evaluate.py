"""``zerolabel eval``: score predictions, a Label Studio project, or methods run here.

Three modes: PREDICTIONS (the coco.json of ``predict``) with ``--gt``; ``--method`` (repeated)
with ``--gt`` and ``--images``, which runs each method in this process and prints one row per
method; ``--project`` / ``--from-file``, whose annotations are the ground truth.
"""

from __future__ import annotations

from pathlib import Path

import click

from zerolabel import methods


@click.command("eval")
@click.argument("predictions", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--gt",
    "gt_path",
    type=click.Path(exists=True),
    default=None,
    help="Ground truth: VOC XML folder, COCO JSON, or YOLO labels folder.",
)
@click.option(
    "--gt-format",
    type=click.Choice(["auto", "voc", "coco", "yolo"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Images folder (YOLO ground truth needs image sizes; --method runs on it).",
)
@click.option(
    "-m",
    "--method",
    "method_names",
    multiple=True,
    type=click.Choice(methods.METHOD_NAMES),
    help="Run this method on --images and score it (repeat: one row per method).",
)
@click.option(
    "--fitted",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --method: fitted file of methods that need one [default: ZEROLABEL_FITTED].",
)
@click.option("--device", default=None, help="With --method: auto, cpu, cuda ... [auto].")
@click.option(
    "--preset",
    type=click.Choice(methods.PRESETS),
    default="default",
    show_default=True,
    help="With --method: input sizing of every method, default or paper (each method's "
    "authors' input: full resolution, DSS cut to whole patches, MaskCut and ProMerge "
    "480x480).",
)
@click.option(
    "--project",
    type=int,
    default=None,
    help="Score a project's predictions against its annotations (Label Studio API).",
)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The same from a Label Studio JSON export file.",
)
@click.option(
    "--model-version",
    default=None,
    help="Predictions to score [default: the latest version; the output names it].",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write per-image results to this CSV.",
)
def eval_(
    predictions: str | None,
    gt_path: str | None,
    gt_format: str,
    images_dir: str | None,
    method_names: tuple[str, ...],
    fitted: str | None,
    device: str | None,
    preset: str,
    project: int | None,
    from_file: str | None,
    model_version: str | None,
    csv_path: str | None,
) -> None:
    """CorLoc, class-agnostic AP50 / AP / AR100, the Spearman correlations of region score with
    IoU and of task score with task quality (and cluster purity / NMI).

    Either PREDICTIONS (the coco.json of `predict`) with --gt; or --method (repeatable) with
    --gt and --images, one row per method; or a Label Studio project (--project or
    --from-file) whose annotations are the ground truth.
    """
    from zerolabel.evaluation.metrics import evaluate

    modes = [predictions is not None, bool(method_names), project is not None, from_file]
    if sum(map(bool, modes)) != 1 or (predictions is not None or bool(method_names)) != bool(
        gt_path
    ):
        raise click.UsageError(
            "give PREDICTIONS with --gt, or --method with --gt and --images, or --project, "
            "or --from-file"
        )
    if preset != "default" and not method_names:
        raise click.UsageError("--preset sets the input of --method runs: give --method with it")
    if method_names:
        _eval_methods(method_names, str(gt_path), gt_format, images_dir, fitted, device, preset)
        return
    if predictions is not None and gt_path is not None:
        report = evaluate(
            predictions, gt_path, gt_format=gt_format, images_dir=images_dir, csv_path=csv_path
        )
        click.echo(report.format_table())
        return
    _eval_project(project, from_file, model_version, csv_path)


def _eval_methods(
    names: tuple[str, ...],
    gt_path: str,
    gt_format: str,
    images_dir: str | None,
    fitted: str | None,
    device: str | None,
    preset: str = "default",
) -> None:
    from zerolabel.cli.common import expand_inputs
    from zerolabel.evaluation.ground_truth import read_ground_truth
    from zerolabel.loop.compare import (
        evaluate_methods,
        format_rows,
        images_with_ground_truth,
    )
    from zerolabel.loop.predict import with_overrides
    from zerolabel.settings import WorkerSettings

    if images_dir is None:
        raise click.UsageError("--method needs --images: the folder of the ground-truth images")
    settings = with_overrides(WorkerSettings.from_env(), {"fitted": fitted, "device": device})
    gt = read_ground_truth(gt_path, gt_format, images_dir)
    files = images_with_ground_truth(expand_inputs((images_dir,)), gt)
    rows = evaluate_methods(settings, list(dict.fromkeys(names)), files, gt, preset)
    click.echo(format_rows(rows))


def _eval_project(
    project: int | None, from_file: str | None, model_version: str | None, csv_path: str | None
) -> None:
    from zerolabel.cli.common import ls_client, project_tasks, read_tasks, worker_settings
    from zerolabel.labelstudio.versions import choose_model_version
    from zerolabel.loop.evaluate import evaluate_export

    data = (
        project_tasks(ls_client(worker_settings()), project)
        if project is not None
        else read_tasks(str(from_file))
    )
    choice = choose_model_version(data, model_version)
    report, clusters = evaluate_export(
        data, model_version=choice.version, csv_path=Path(csv_path) if csv_path else None
    )
    click.echo(report.format_table())
    if clusters is not None:
        click.echo(clusters.format_table())
    if (line := choice.summary()) is not None:
        click.echo(line, err=True)
