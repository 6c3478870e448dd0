"""``zerolabel adapt``: continue DINO's self-distillation on a team's images and videos.

The inputs are checked (every file read once) before any model loads; training can be stopped
at any time (Ctrl-C, SIGTERM: the step under way is finished and saved) and the same command
resumes it. Under ``torchrun`` every process runs this command; process 0 writes the files.
torch is imported inside the command only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from zerolabel.cli.options import weights_options

logger = logging.getLogger(__name__)


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from zerolabel.cad.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


_POSITIVE = click.FloatRange(min=0.0, min_open=True)


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the checkpoint and the adapted weights (a run there is resumed).",
)
@weights_options
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images (or clips) per step, over all processes.",
)
@click.option(
    "--lr",
    type=_POSITIVE,
    default=0.0005,
    show_default=True,
    help="Peak learning rate for 256 images; scaled by batch size / 256 (DINO).",
)
@click.option("--min-lr", type=click.FloatRange(min=0.0), default=1e-6, show_default=True)
@click.option(
    "--out-dim",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    help="Prototypes of the projection head (DINO: 65536; a few thousand for small sets).",
)
@click.option("--teacher-temp", type=_POSITIVE, default=0.07, show_default=True)
@click.option(
    "--momentum",
    type=click.FloatRange(0.0, 1.0),
    default=0.996,
    show_default=True,
    help="Teacher EMA momentum at the start (cosine to 1).",
)
@click.option(
    "--local-crops",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Local crops per image or frame.",
)
@click.option("--global-size", type=click.IntRange(min=1), default=224, show_default=True)
@click.option("--local-size", type=click.IntRange(min=1), default=96, show_default=True)
@click.option(
    "--drop-path", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.1, show_default=True
)
@click.option(
    "--clip-frames",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Frames per video clip (DoRA).",
)
@click.option(
    "--frame-step",
    type=click.IntRange(min=1),
    default=60,
    show_default=True,
    help="Frames between two frames of a clip (DoRA's run on 30 fps videos: 60).",
)
@click.option(
    "--objects",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Objects tracked per clip, one attention head each (DoRA).",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=32),
    default=1024,
    show_default=True,
    help="Images and frames are shrunk to this longer side before cropping.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ... [default: auto].")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16"]),
    default="fp32",
    show_default=True,
    help="fp16/bf16: forward passes under autocast (fp16 with gradient scaling, CUDA only).",
)
@click.option(
    "--grad-checkpointing",
    is_flag=True,
    help="Recompute each block in the backward pass: less memory, about a third more time.",
)
@click.option(
    "--checkpoint-every",
    "checkpoint_seconds",
    default="5m",
    metavar="DURATION",
    callback=_duration,
    show_default=True,
    help="Wall time between checkpoints: 90s, 5m, 1h or seconds.",
)
@click.option(
    "--checkpoint-steps",
    "checkpoint_every",
    type=click.IntRange(min=1),
    default=None,
    help="Also write a checkpoint every N steps.",
)
def adapt(
    inputs: tuple[str, ...],
    out_dir: str,
    backbone: str | None,
    checkpoint: str | None,
    device: str | None,
    **options: Any,
) -> None:
    """Adapt the backbone to your images and videos (DINO self-distillation; DoRA for videos).

    INPUTS are image and video files, and folders searched recursively. Writes
    OUT/adapted-<digest>.pth (serve it as a checkpoint) and OUT/adapted-<digest>.json.
    """
    from zerolabel.adapt import ddp
    from zerolabel.settings import WorkerSettings
    from zerolabel.vit.backbone import pick_device

    settings = WorkerSettings.from_env()
    place = ddp.from_environment(device or settings.device)
    try:
        if not place.main:
            logging.getLogger().setLevel(logging.WARNING)  # one process speaks
        chosen = backbone or settings.backbone
        config = _config(
            options,
            backbone=chosen,
            checkpoint=checkpoint or settings.checkpoint,
            model_kwargs=settings.backbone_kwargs if chosen == settings.backbone else None,
            offline=settings.offline,
            pos_embed=settings.pos_embed,
            device=str(pick_device(ddp.process_device(device or settings.device, place))),
        )
        found = _inputs(inputs, config, settings, progress=place.main)
        if place.main:
            click.echo(f"adapting {config.backbone} on {found.describe()}", err=True)
        command = _command_line(
            click.get_current_context(), backbone=chosen, checkpoint=config.checkpoint
        )
        result = _train(config, found, Path(out_dir), place, command)
    finally:
        place.close()
    if result is not None:
        click.echo(
            f"adapted weights: {result.weights} (metadata: {result.metadata.name}); serve them "
            f"with ZEROLABEL_CHECKPOINT={result.weights}, or copy them into "
            f'ZEROLABEL_MODELS_DIR and set a project\'s Extra params {{"checkpoint": '
            f'"{result.weights.name}"}}',
            err=True,
        )


def _config(options: dict[str, Any], **fixed: Any) -> Any:
    from zerolabel.adapt.config import AdaptConfig

    return AdaptConfig(**fixed, **options)


def _inputs(inputs: tuple[str, ...], config: Any, settings: Any, *, progress: bool) -> Any:
    """The inputs, checked; a folder with nothing to train on is a usage error."""
    from zerolabel.adapt.data import collect
    from zerolabel.errors import ConfigError
    from zerolabel.io.images import ImageLimits

    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    try:
        return collect(
            inputs,
            clip_frames=config.clip_frames,
            frame_step=config.frame_step,
            limits=limits,
            progress=progress,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _command_line(ctx: click.Context, **resolved: Any) -> list[str]:
    """The command with every option's value, those read from the settings included: what
    reproduces the run."""
    words = ["zerolabel", ctx.info_name or "adapt"]
    params = {**ctx.params, **{key: value for key, value in resolved.items() if value}}
    for param in ctx.command.params:
        value = params.get(param.name or "")
        if isinstance(param, click.Argument):
            words += [str(item) for item in value or ()]
        elif isinstance(param, click.Option) and value not in (None, False):
            flag = max(param.opts, key=len)
            words += [flag] if param.is_flag else [flag, str(value)]
    return words


def _train(config: Any, inputs: Any, out_dir: Path, place: Any, command: list[str]) -> Any:
    """Train, turning a stop by signal into its message and exit status."""
    from zerolabel.adapt.training import adapt as run
    from zerolabel.cad.stopping import TrainingInterrupted

    try:
        return run(config, inputs, out_dir, command=command, place=place)
    except TrainingInterrupted as stop:
        if place.main:
            click.echo(
                f"interrupted at step {stop.iteration}/{config.steps}: checkpoint "
                f"{stop.checkpoint} saved; run the same command again to resume",
                err=True,
            )
        raise SystemExit(stop.exit_status) from None
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: the last checkpoint in {out_dir} stays; run the same command again "
            "to resume from it",
            err=True,
        )
        raise SystemExit(130) from None
