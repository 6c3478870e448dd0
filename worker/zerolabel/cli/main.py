"""``zerolabel`` command line: predict and worker; eval in :mod:`.evaluate`, the labeling loop in
:mod:`.loop`.

Heavy imports (torch, timm) happen inside the commands, so ``zerolabel --help`` is instant and
the queue commands never load torch. ``zerolabel serve`` is added by zerolabel-backend.
Failures reach the user as one ``Error:`` line, decided in one place: :mod:`.errors`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

import click

from zerolabel import methods
from zerolabel.cli.common import expand_inputs, parse_params
from zerolabel.cli.errors import ZerolabelGroup, remember_url
from zerolabel.cli.options import (
    local_files_options,
    preset_option,
    shapes_option,
    tasks_shapes,
    weights_options,
)
from zerolabel.errors import DiscoveryError

logger = logging.getLogger("zerolabel")


def _setup_logging(verbose: bool) -> None:
    from zerolabel.transport import redact_logs

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    redact_logs()


@click.group(cls=ZerolabelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v", "--verbose", is_flag=True, help="Debug logging (with the traceback of an error)."
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Read settings from this file (docker/zerolabel.env.example's format); variables "
    "already in the environment win.",
)
def main(verbose: bool, env_file: str | None) -> None:
    """Zero-label object pre-labeling for Label Studio."""
    _setup_logging(verbose)
    if env_file is not None:
        from zerolabel.envfile import load_env_file

        load_env_file(env_file)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="zerolabel-out",
    show_default=True,
    help="Folder for tasks.json (Label Studio) and coco.json.",
)
@click.option(
    "-m",
    "--method",
    type=click.Choice(methods.METHOD_NAMES),
    default=None,
    help="Discovery method, or cad for a trained detector [default: ZEROLABEL_METHOD or lost].",
)
@click.option(
    "--cad-checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Detector written by zerolabel train-cad (method cad).",
)
@click.option(
    "--fitted",
    type=click.Path(dir_okay=False),
    default=None,
    help="Fitted file of a method that learns from a dataset [default: ZEROLABEL_FITTED].",
)
@weights_options
@click.option(
    "--max-side",
    type=int,
    default=None,
    help="Cap on the longer side in pixels; 0 = full resolution [default: 1024, MaskCut 480].",
)
@click.option(
    "--square",
    type=int,
    default=None,
    help="Resize to SIDE x SIDE ignoring aspect (MaskCut authors used 480).",
)
@preset_option
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ... [default: auto].")
@click.option("--half", is_flag=True, default=None, help="fp16 weights (CUDA only).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default=None,
    help="Forward-pass precision; fp16/bf16 by autocast [default: ZEROLABEL_PRECISION or fp32].",
)
@click.option(
    "--compile",
    "compile_mode",
    type=click.Choice(["off", "default", "reduce-overhead", "max-autotune"]),
    default=None,
    help="torch.compile the ViT blocks (GPU; first batch per size compiles) [off].",
)
@click.option("--batch-size", type=int, default=None, help="Images per forward pass [8].")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Method parameter, e.g. -p k_patches=100, -p tau=0.2, -p max_objects=3.",
)
@click.option("--no-masks", is_flag=True, help="Boxes only (no BrushLabels / segmentation).")
@click.option(
    "--refine/--no-refine",
    default=None,
    help="Snap masks and boxes to the image's edges (dense CRF) [default: on for maskcut].",
)
@click.option("--label", default="object", show_default=True, help="Label value of the regions.")
@shapes_option
@local_files_options
def predict(
    inputs: tuple[str, ...],
    out_dir: str,
    method: str | None,
    cad_checkpoint: str | None,
    fitted: str | None,
    backbone: str | None,
    checkpoint: str | None,
    max_side: int | None,
    square: int | None,
    preset: str,
    device: str | None,
    half: bool | None,
    precision: str | None,
    compile_mode: str | None,
    batch_size: int | None,
    params: tuple[str, ...],
    no_masks: bool,
    refine: bool | None,
    label: str,
    shapes: str,
    url_prefix: str,
    document_root: str,
) -> None:
    """Discover objects in images; write Label Studio tasks and COCO JSON.

    INPUTS are image files, folders or glob patterns. A file that cannot be read is reported by
    name and skipped; the exit status is 1 if any file failed.
    """
    from zerolabel.loop import predict as batch
    from zerolabel.settings import WorkerSettings

    settings = WorkerSettings.from_env()
    overrides = {
        "method": method,
        "cad_checkpoint": cad_checkpoint,
        "fitted": fitted,
        "backbone": backbone,
        "checkpoint": checkpoint,
        "max_side": max_side,
        "device": device,
        "half": half,
        "precision": precision,
        "batch_size": batch_size,
    }
    settings = batch.with_overrides(settings, overrides)
    if compile_mode is not None:  # "off" must be able to clear ZEROLABEL_COMPILE
        mode = None if compile_mode == "off" else compile_mode
        settings = dataclasses.replace(settings, compile_mode=mode)
    typed = parse_params(params, settings.method)  # refused here, before any model loads
    files = expand_inputs(inputs)
    job = batch.BatchJob.create(
        settings,
        square=square,
        preset=preset,
        params=typed,
        masks=not no_masks,
        refine=refine,
        shapes=tasks_shapes(
            shapes,
            masks=not no_masks,
            pixel_masks=methods.get(settings.method).pixel_masks(refine),
        ),
    )
    start = time.perf_counter()
    report = job.run(
        files, Path(out_dir), label=label, url_prefix=url_prefix, document_root=Path(document_root)
    )
    click.echo(report.summary(time.perf_counter() - start), err=True)
    if report.failures:
        sys.exit(1)


@main.command()
@click.option("--name", default=None, help="Worker name shown by RQ [default: host.pid].")
@click.option("--burst", is_flag=True, help="Stop when the queue is empty (batch machines).")
def worker(name: str | None, burst: bool) -> None:
    """Serve discovery jobs from the Redis queue; the model is loaded once and kept.

    When Redis goes away the worker waits for it (capped backoff) and carries on.
    """
    from zerolabel import metrics
    from zerolabel.queue.jobs import get_runtime
    from zerolabel.queue.worker import run_worker

    runtime = get_runtime()
    settings = runtime.settings
    remember_url("redis", settings.queue.redis_url)
    spec = settings.spec()
    if runtime.redis is None:
        raise DiscoveryError("the worker runtime has no Redis connection")
    runtime.redis.ping()  # a missing Redis fails in a moment, before the model is loaded
    runner = runtime.runner(spec)  # a ViT method or the trained detector, loaded before any job
    logger.info("serving queue %r with %s", settings.queue.queue, runner.model_version)
    metrics.serve(settings.metrics_host, settings.metrics_port)  # port 0: none
    run_worker(runtime.redis, settings.queue, name=name, burst=burst)


def _register_commands() -> None:
    """The loop's commands, then those other installed packages add (``zerolabel serve`` comes
    with zerolabel-backend) through the ``zerolabel.commands`` entry-point group."""
    from importlib.metadata import entry_points

    from zerolabel.cli.adapt import adapt
    from zerolabel.cli.evaluate import eval_
    from zerolabel.cli.loop import COMMANDS
    from zerolabel.cli.use import use

    main.add_command(adapt)
    main.add_command(eval_)
    main.add_command(use)
    for command in COMMANDS:
        main.add_command(command)
    for entry in entry_points(group="zerolabel.commands"):
        main.add_command(entry.load(), entry.name)


_register_commands()

if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
