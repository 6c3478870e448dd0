"""``zerolabel use``: point one project at a model (a method, a detector, a fitted file).

Projects choose their model through their ML backend connection's Extra params; this command
writes them (:mod:`zerolabel.loop.use_model`), so a team switches a project to a new detector
without editing env files or restarting anything, while other projects keep theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from zerolabel import methods
from zerolabel.cli.common import ls_client
from zerolabel.cli.errors import remember_url
from zerolabel.cli.options import preset_option
from zerolabel.methods import MethodKind


@click.command()
@click.option("--project", type=int, required=True, help="Label Studio project id.")
@click.argument("method", type=click.Choice(methods.METHOD_NAMES))
@click.option(
    "--detector",
    metavar="FILE",
    default=None,
    help="Method cad: the detector zerolabel train-cad or self-train wrote (cad-<digest>.pt, or "
    "a checkpoint_last.pt), copied into ZEROLABEL_MODELS_DIR; or the name of one there "
    "[default: ZEROLABEL_CAD_CHECKPOINT].",
)
@click.option(
    "--fitted",
    metavar="FILE",
    default=None,
    help="The fitted file of a method that reads one (rps, found), copied into "
    "ZEROLABEL_MODELS_DIR; or the name of one there [default: ZEROLABEL_FITTED].",
)
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Method parameter, e.g. -p tau=0.2, -p score_threshold=0.5.",
)
@click.option(
    "-b", "--backbone", default=None, help="A named backbone [default: ZEROLABEL_BACKBONE]."
)
@click.option(
    "--max-side",
    type=int,
    default=None,
    help="Cap on the longer side in pixels, 64 to 2048 [default: the method's].",
)
@preset_option
@click.option(
    "--prelabel",
    "run_prelabel",
    is_flag=True,
    help="Then pre-label the project with it (as zerolabel prelabel; needs live workers).",
)
@click.option(
    "--batch-size",
    type=int,
    default=16,
    show_default=True,
    help="--prelabel: tasks queued at a time.",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=600.0,
    show_default=True,
    help="--prelabel: seconds to wait for a batch before leaving its late tasks to a next run.",
)
def use(
    project: int,
    method: str,
    detector: str | None,
    fitted: str | None,
    params: tuple[str, ...],
    backbone: str | None,
    max_side: int | None,
    preset: str,
    run_prelabel: bool,
    batch_size: int,
    wait_s: float,
) -> None:
    """Point a project at METHOD (and its detector or fitted file); prints the model version.

    Writes the Extra params of the project's ML backend connection (what a project runs; other
    projects keep theirs), after copying the file into ZEROLABEL_MODELS_DIR, the folder backend
    and workers load models from by name. Label Studio calls the backend's /setup with them, and
    workers load the model when its first job comes: nothing restarts. The Extra params that do
    not choose the model (label, masks) stay.
    """
    from zerolabel.cli.common import parse_params
    from zerolabel.loop.use_model import project_connections, switch_project
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings

    settings = BackendSettings.from_env()
    model: dict[str, Any] = {"method": method, **parse_params(params, method)}
    if backbone is not None:
        model["backbone"] = backbone
    if max_side is not None:
        model["max_side"] = max_side
    if preset != "default":
        model["preset"] = preset
    _check_files(method, detector, fitted, settings.discovery.models_dir)
    service = PredictionService(settings)
    with ls_client(settings.discovery) as client:
        connections = project_connections(client, project)  # refused before anything is copied
        model |= _install(settings.discovery, model, detector=detector, fitted=fitted)
        switch = switch_project(client, service, connections, model)
        for name in switch.connections:
            click.echo(f"ML backend connection {name}: Extra params {_json(switch)}", err=True)
        if not switch.project_version and not run_prelabel:
            click.echo(
                f"project {project}: {switch.model_version} becomes its model version "
                f"(Prediction score column) with its first predictions: zerolabel prelabel "
                f"--project {project}",
                err=True,
            )
        click.echo(switch.model_version)
        if run_prelabel:
            _prelabel(client, project, service, batch_size, wait_s)


def _check_files(method: str, detector: str | None, fitted: str | None, folder: str | None) -> None:
    """Refuse files the method does not read, or files without a models folder to put them."""
    info = methods.get(method)
    if detector is not None and info.kind is not MethodKind.DETECTOR:
        raise click.UsageError(f"--detector is the detector of method cad, not of {method}")
    if fitted is not None and info.fitted is None:
        raise click.UsageError(f"method {method} reads no fitted file: drop --fitted")
    if (detector is not None or fitted is not None) and folder is None:
        flag = "--detector" if detector is not None else "--fitted"
        raise click.UsageError(
            f"{flag} needs ZEROLABEL_MODELS_DIR: the folder backend and workers load models "
            "from (under compose docker/weights here, /weights in the containers)"
        )


def _install(
    settings: Any, model: dict[str, Any], *, detector: str | None, fitted: str | None
) -> dict[str, str]:
    """The Extra params naming the model's files, copied into the models folder first."""
    from zerolabel.loop.use_model import install_detector, install_fitted, model_source

    folder = settings.models_dir  # set when a file is given (_check_files)
    named: dict[str, str] = {}
    if detector is not None:
        source = model_source(detector, folder, "detector")
        named["detector"] = install_detector(source, folder) if isinstance(source, Path) else source
    if fitted is not None:
        source = model_source(fitted, folder, "fitted file")
        if isinstance(source, Path):
            probe = settings.spec(method="lost", backbone=model.get("backbone"))  # no fitted file
            kind = methods.get(model["method"]).fitted or ""
            source = install_fitted(
                source, folder, kind=kind, backbone=probe.backbone, weights=probe.weights
            )
        named["fitted"] = source
    return named


def _prelabel(client: Any, project: int, service: Any, batch_size: int, wait_s: float) -> None:
    from zerolabel.loop.prelabel import prelabel_project

    remember_url("redis", service.settings.discovery.queue.redis_url)
    try:
        report = prelabel_project(
            client, project, service, batch_size=batch_size, wait_timeout_s=wait_s
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: run zerolabel prelabel --project {project} to resume", err=True)
        raise SystemExit(130) from None
    click.echo(report.summary(), err=True)
    if not report.complete:
        raise SystemExit(1)


def _json(switch: Any) -> str:
    import json

    return json.dumps(switch.extra_params, sort_keys=True)
