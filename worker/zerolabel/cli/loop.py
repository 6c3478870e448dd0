"""``zerolabel`` commands of the labeling loop: prelabel here, cluster / export in :mod:`.labels`,
relabel in :mod:`.relabel`, clusters-sheet in :mod:`.sheets`, import in :mod:`.project`,
train-cad / self-train in :mod:`.detector`, rps-fit / train-found in :mod:`.fit`;
:data:`COMMANDS` lists them all.

Project variants talk to Label Studio with ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``
(legacy token or personal access token).
"""

from __future__ import annotations

import click

from zerolabel.cli.common import ls_client
from zerolabel.cli.detector import self_train, train_cad
from zerolabel.cli.errors import remember_url
from zerolabel.cli.fit import rps_fit, train_found
from zerolabel.cli.labels import cluster, export
from zerolabel.cli.project import import_
from zerolabel.cli.relabel import relabel
from zerolabel.cli.sheets import clusters_sheet


@click.command()
@click.option("--project", type=int, required=True, help="Label Studio project id.")
@click.option(
    "--options",
    "options_json",
    default=None,
    help="Per-project options as JSON, like the ML backend's extra params: "
    '{"method": "maskcut", "max_side": 640} [default: the project\'s ML backend connection\'s '
    "Extra params; given, they must give its model version].",
)
@click.option(
    "--batch-size", type=int, default=16, show_default=True, help="Tasks queued at a time."
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for a batch before leaving its late tasks to the next run.",
)
@click.option(
    "--worker-ls-url",
    default=None,
    help="Label Studio URL as the workers reach it [default: LABEL_STUDIO_URL].",
)
def prelabel(
    project: int,
    options_json: str | None,
    batch_size: int,
    wait_s: float,
    worker_ls_url: str | None,
) -> None:
    """Pre-label every task of a project through the queue and write the predictions back.

    Tasks that already have a prediction of the current model_version are skipped, so an
    interrupted run picks up where it stopped. Needs running workers (`zerolabel worker`):
    with none alive, nothing is queued, and a run whose workers all stop ends early.
    """
    from zerolabel.labelstudio.options import ProjectOptions
    from zerolabel.loop.prelabel import prelabel_project
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings

    settings = BackendSettings.from_env()
    remember_url("redis", settings.discovery.queue.redis_url)
    options = None if options_json is None else ProjectOptions.parse(options_json)
    try:
        with ls_client(settings.discovery) as client:
            report = prelabel_project(
                client,
                project,
                PredictionService(settings),
                options=options,
                batch_size=batch_size,
                wait_timeout_s=wait_s,
                worker_ls_url=worker_ls_url,
                progress=True,
            )
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        raise SystemExit(130) from None
    click.echo(report.summary(), err=True)
    if not report.complete:
        raise SystemExit(1)


COMMANDS = [
    import_,
    cluster,
    clusters_sheet,
    relabel,
    export,
    prelabel,
    train_cad,
    self_train,
    rps_fit,
    train_found,
]
