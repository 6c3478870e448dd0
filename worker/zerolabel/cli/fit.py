"""``zerolabel rps-fit`` and ``train-found``: fit a method on a folder of images or a project.

Both write a fitted file (``<kind>-<digest>.pt``, :mod:`zerolabel.fitted`) bound to the backbone
and weights of the settings (``ZEROLABEL_BACKBONE``, ``ZEROLABEL_CHECKPOINT``, ``-b``/``-c``),
print its path on stdout and, on stderr, what was read and how to serve it. Images are resized
as prediction will resize them (``--max-side`` or ``ZEROLABEL_MAX_SIDE``, else the method's
default, or for ``rps-fit --preset paper`` the authors' 224 x 224). ``rps-fit`` also writes the
top representer patches of each direction beside the file (``<file stem>-representers/``: one
sheet per direction and ``representers.json``). The training logic lives in
:mod:`zerolabel.loop.fit_rps` and :mod:`zerolabel.loop.fit_found`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from zerolabel.cli.common import cli_fetcher, ls_client, project_tasks
from zerolabel.cli.options import project_option, weights_options
from zerolabel.methods import PRESETS

FITTING_IGNORES = ("ZEROLABEL_METHOD", "ZEROLABEL_FITTED")
"""Settings a fit does not read: the method it fits is its own, and the file it writes may be
the one an env file already names for serving."""


def _fit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.argument("inputs", nargs=-1),
        project_option,
        click.option(
            "-o",
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            default="zerolabel-fitted",
            show_default=True,
            help="Folder for the fitted file.",
        ),
        weights_options,
        click.option(
            "--max-side",
            type=click.IntRange(min=0),
            default=None,
            help="Cap on the longer side as prediction will use it; 0 = full resolution "
            "[default: ZEROLABEL_MAX_SIDE, else 1024; rps-fit --preset paper: 224x224].",
        ),
        click.option("--device", default=None, help="auto, cpu, cuda ... [default: auto]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("rps-fit")
@_fit_options
@click.option(
    "--preset",
    type=click.Choice(PRESETS),
    default="default",
    show_default=True,
    help="default: images capped as prediction caps them, objects boxed on the patch grid; "
    "paper: the authors' fit (224x224 images, the box of the map upsampled to pixels). "
    "Predict with the same --preset.",
)
@click.option(
    "--class-agnostic",
    is_flag=True,
    help="One direction for the project even when its annotations name several labels.",
)
def rps_fit(
    inputs: tuple[str, ...],
    project: int | None,
    out_dir: str,
    backbone: str | None,
    checkpoint: str | None,
    max_side: int | None,
    device: str | None,
    preset: str,
    class_agnostic: bool,
) -> None:
    """Fit the foreground direction of representer point selection (method rps).

    INPUTS are image files, folders or glob patterns; or give --project. One pass over the
    images, no feature kept in memory. With --project, the tasks' annotations (the boxes
    annotators accepted) also pick the map threshold (a second pass over the annotated
    images) and, when two labels or more hold 3 annotated images each, give each label a
    direction of its own: predictions are then labelled with the best label.
    """
    from zerolabel.loop.fit_rps import fit_input, fit_rps

    settings = _settings(backbone, checkpoint, max_side, device)
    side, _ = fit_input(settings.max_side, preset)
    samples = _samples(inputs, project, settings, "rps", from_annotations=False, side=side)
    fitted, report = fit_rps(
        samples,
        _backbone(settings),
        backbone_name=settings.backbone,
        weights=settings.weights,
        max_side=settings.max_side,
        preset=preset,
        classwise=not class_agnostic,
    )
    path = _save(fitted, report, out_dir, "rps", preset=preset)
    _write_representers(report.representers, path.with_name(f"{path.stem}-representers"))


@click.command("train-found")
@_fit_options
@click.option(
    "--from-annotations",
    is_flag=True,
    help="Learn the project's corrected boxes and masks instead of FOUND's own coarse masks.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--lr", type=click.FloatRange(min=0.0, min_open=True), default=0.01, show_default=True
)
@click.option(
    "--patches-per-image",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Patches kept per image (a seeded random subset): bounds memory.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tau",
    type=click.FloatRange(-1.0, 1.0),
    default=0.3,
    show_default=True,
    help="FOUND's background threshold for the coarse masks.",
)
def train_found(
    inputs: tuple[str, ...],
    project: int | None,
    out_dir: str,
    backbone: str | None,
    checkpoint: str | None,
    max_side: int | None,
    device: str | None,
    from_annotations: bool,
    epochs: int,
    lr: float,
    patches_per_image: int,
    seed: int,
    tau: float,
) -> None:
    """Train FOUND's 1x1 head (method found) on a folder of images or a project.

    INPUTS are image files, folders or glob patterns; or give --project. The targets are
    FOUND's own coarse masks, or with --from-annotations the project's corrected annotations.
    A few minutes on CPU.
    """
    from zerolabel.loop.fit_found import HeadTraining, fit_found

    if from_annotations and project is None:
        raise click.UsageError("--from-annotations reads a project's annotations: give --project")
    config = HeadTraining(
        epochs=epochs, lr=lr, patches_per_image=patches_per_image, seed=seed, tau=tau
    )
    from zerolabel.loop.fitting import effective_max_side

    settings = _settings(backbone, checkpoint, max_side, device)
    side = effective_max_side("found", settings.max_side)
    samples = _samples(
        inputs, project, settings, "found", from_annotations=from_annotations, side=side
    )
    fitted, report = fit_found(
        samples,
        _backbone(settings),
        backbone_name=settings.backbone,
        weights=settings.weights,
        max_side=settings.max_side,
        config=config,
        from_annotations=from_annotations,
    )
    click.echo(f"final loss {fitted.meta['loss']:.4f} after {epochs} epoch(s)", err=True)
    _save(fitted, report, out_dir, "found")


def _settings(
    backbone: str | None, checkpoint: str | None, max_side: int | None, device: str | None
) -> Any:
    """Worker settings from the environment (less :data:`FITTING_IGNORES`) and the options."""
    from zerolabel.loop.predict import with_overrides
    from zerolabel.settings import EnvReader, WorkerSettings

    env = {k: v for k, v in EnvReader().env.items() if k not in FITTING_IGNORES}
    overrides = {"backbone": backbone, "checkpoint": checkpoint, "max_side": max_side}
    return with_overrides(WorkerSettings.from_env(env), {**overrides, "device": device})


def _backbone(settings: Any) -> Any:
    from zerolabel.loop.predict import loaded_backbone

    return loaded_backbone(settings)


def _samples(
    inputs: tuple[str, ...],
    project: int | None,
    settings: Any,
    method: str,
    *,
    from_annotations: bool,
    side: int | None,
) -> list[Any]:
    """The images to fit on: files and folders, or a project's tasks (with their annotations:
    only the annotated tasks with ``from_annotations``; for rps, every task, the annotated
    ones with their objects), decoded for a longer side of ``side`` (None: full size)."""
    if bool(inputs) == (project is not None):
        raise click.UsageError("give INPUTS (images, folders, patterns) or --project")
    if project is None:
        return _file_samples(inputs, settings, side)
    tasks = project_tasks(ls_client(settings), project)
    fetch = _fetch(settings, side)
    if from_annotations:
        return _annotated_samples(tasks, project, fetch)
    if method == "rps":
        return _project_samples(tasks, fetch)
    return [_task_sample(task, fetch) for task in tasks]


def _file_samples(inputs: tuple[str, ...], settings: Any, side: int | None) -> list[Any]:
    from zerolabel.cli.common import expand_inputs
    from zerolabel.io.images import ImageLimits, load_file
    from zerolabel.loop.fitting import FitSample

    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)

    def loader(path: Path) -> Callable[[], Any]:
        return lambda: load_file(path, limits, max_side=side)

    return [FitSample(str(path), loader(path)) for path in expand_inputs(inputs)]


def _fetch(settings: Any, side: int | None) -> Callable[[str], Any]:
    """Image URL -> image, downloaded from Label Studio with the configured key."""
    fetcher, limits = cli_fetcher(settings)
    return lambda url: fetcher.fetch(url, limits, max_side=side)


def _task_sample(task: dict[str, Any], fetch: Callable[[str], Any]) -> Any:
    from zerolabel.cli.common import image_url
    from zerolabel.errors import ImageLoadError
    from zerolabel.loop.fitting import FitSample

    name = f"task {task.get('id')}"

    def load() -> Any:
        try:
            url = image_url(task)
        except ValueError as exc:
            raise ImageLoadError(name, str(exc)) from None
        return fetch(url)

    return FitSample(name, load)


def _project_samples(tasks: list[dict[str, Any]], fetch: Callable[[str], Any]) -> list[Any]:
    """Every task of a project, those annotated with their accepted objects (an empty list for
    a task annotated as empty), the others without."""
    from zerolabel.formats.reader import read_ls_export

    annotated = {
        record.task_id: record
        for record in read_ls_export(tasks, source="annotations").images
        if record.task_id is not None
    }
    samples = []
    for task in tasks:
        task_id = task.get("id")
        record = annotated.get(task_id) if isinstance(task_id, int) else None
        sample = _task_sample(task, fetch)
        if record is not None:
            sample = replace(
                sample, objects=record.objects, annotated_hw=(record.height, record.width)
            )
        samples.append(sample)
    return samples


def _annotated_samples(
    tasks: list[dict[str, Any]], project: int, fetch: Callable[[str], Any]
) -> list[Any]:
    from zerolabel.formats.reader import read_ls_export, summarize_skipped
    from zerolabel.loop.fitting import FitSample

    dataset = read_ls_export(tasks, source="annotations")
    if dataset.skipped:
        click.echo(f"  not annotated: {summarize_skipped(dataset.skipped)}", err=True)
    if not dataset.images:
        raise click.ClickException(
            f"project {project} has no annotated task to learn from: annotate some, or train "
            "on FOUND's own masks (without --from-annotations)"
        )

    def loader(url: str) -> Callable[[], Any]:
        return lambda: fetch(url)

    return [
        FitSample(
            f"task {record.task_id}",
            loader(record.url),
            objects=record.objects,
            annotated_hw=(record.height, record.width),
        )
        for record in dataset.images
    ]


def _write_representers(representers: dict[str, list[Any]], folder: Path) -> None:
    """One sheet per direction of its top representer patches, and their list as JSON."""
    from zerolabel.loop.sheets import write_patch_sheets

    write_patch_sheets(representers, folder, caption="top representer patches")
    listing = {name: [r.to_dict() for r in shown] for name, shown in representers.items()}
    (folder / "representers.json").write_text(json.dumps(listing, indent=2) + "\n")
    click.echo(f"top representer patches of each direction: {folder}", err=True)


def _save(fitted: Any, report: Any, out_dir: str, method: str, preset: str = "default") -> Path:
    from zerolabel.fitted import save_fitted

    path = save_fitted(fitted, out_dir)
    click.echo(report.summary(), err=True)
    click.echo(str(path))
    flag = "" if preset == "default" else f" --preset {preset}"
    click.echo(
        f"serve it with ZEROLABEL_METHOD={method} ZEROLABEL_FITTED={path} (backend and "
        f"workers), or: zerolabel predict -m {method} --fitted {path}{flag} IMAGES",
        err=True,
    )
    return path
