"""``zerolabel train-cad`` and ``self-train``: a class-agnostic detector from exported labels.

Training can be stopped at any time (Ctrl-C, SIGTERM): the iteration under way is finished and
saved, and the same command resumes it. A self-training round continues from the previous
round's detector unless ``--from-scratch`` is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from zerolabel.cad.config import parse_duration
from zerolabel.cli.common import read_coco, write_json


def _duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _training_options(func: Any) -> Any:
    options = [
        click.option(
            "--images",
            "images_dir",
            type=click.Path(exists=True, file_okay=False),
            required=True,
            help="Folder the COCO file names are relative to.",
        ),
        click.option(
            "-o",
            "--out",
            "out_dir",
            type=click.Path(file_okay=False),
            required=True,
            help="Folder for checkpoints (a run there is resumed).",
        ),
        click.option("--iterations", type=click.IntRange(min=1), default=1000, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0.0), default=0.0025, show_default=True),
        click.option(
            "--checkpoint-every",
            "checkpoint_seconds",
            default="5m",
            metavar="DURATION",
            callback=_duration_option,
            show_default=True,
            help="Wall time between checkpoints: 90s, 5m, 1h or seconds.",
        ),
        click.option(
            "--checkpoint-iterations",
            "checkpoint_every",
            type=click.IntRange(min=1),
            default=None,
            help="Also write a checkpoint every N iterations.",
        ),
        click.option(
            "--val-fraction",
            type=click.FloatRange(min=0.0, max=1.0, max_open=True),
            default=None,
            help="Images held out for AP50/AP/AR100 at each checkpoint; 0 disables "
            "[default: 0.1 from 50 images on, else 0].",
        ),
        click.option(
            "--masks/--no-masks",
            default=None,
            help="Mask R-CNN or Faster R-CNN [default: masks when at least half the objects "
            "have one].",
        ),
        click.option(
            "--backbone-checkpoint",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="ResNet-50 weights to start from (e.g. DINO ResNet-50).",
        ),
        click.option(
            "--trainable-backbone-layers",
            type=click.IntRange(0, 5),
            default=None,
            help="ResNet-50 stages trained, 0-5 [default: 3 with --backbone-checkpoint, else 5].",
        ),
        click.option(
            "--min-size",
            type=click.IntRange(min=1),
            default=512,
            show_default=True,
            help="Detector input: shorter side resized to this...",
        ),
        click.option(
            "--max-size",
            type=click.IntRange(min=1),
            default=1024,
            show_default=True,
            help="...unless the longer side would exceed this.",
        ),
        click.option("--device", default="auto", show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _cad_config(coco: dict[str, Any], *, masks: bool | None, **kwargs: Any) -> Any:
    from zerolabel.cad import CadConfig
    from zerolabel.cad.config import choose_masks
    from zerolabel.vit.backbone import pick_device

    masks = choose_masks(coco.get("annotations", []), masks)
    device = str(pick_device(kwargs.pop("device")))
    return CadConfig(masks=masks, device=device, **kwargs)


def _train_and_export(config: Any, coco_path: Path, images_dir: str, out_dir: str) -> Path:
    """Train (stopping cleanly on a signal), then write the weights-only export for serving."""
    from zerolabel.cad import TrainingInterrupted, export_weights, train

    try:
        last = train(config, coco_path, images_dir, out_dir)
    except TrainingInterrupted as stop:
        click.echo(
            f"interrupted at iteration {stop.iteration}/{config.iterations}: checkpoint "
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
    named = export_weights(last)
    click.echo(
        f"detector: {named} ({_megabytes(named)}, weights only; training state "
        f"{last.name}, {_megabytes(last)})\nserve it to a project: "
        f"zerolabel use --project ID cad --detector {named}",
        err=True,
    )
    return named


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.0f} MB"


@click.command("train-cad")
@click.option(
    "--coco",
    "coco_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="Training labels: coco.json from zerolabel export (or predict).",
)
@_training_options
def train_cad(coco_file: str, images_dir: str, out_dir: str, **training: Any) -> None:
    """Train a class-agnostic detector (one 'object' class) on exported labels.

    Ctrl-C or SIGTERM finishes the iteration under way, saves it and exits; the same command
    resumes exactly where it stopped.
    """
    config = _cad_config(read_coco(coco_file), **training)
    _train_and_export(config, Path(coco_file), images_dir, out_dir)


@click.command("self-train")
@click.option(
    "--checkpoint",
    "checkpoint",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The detector of the previous round.",
)
@click.option(
    "--coco",
    "coco_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The previous round's pseudo-labels.",
)
@click.option(
    "--score-threshold",
    type=float,
    default=0.7,
    show_default=True,
    help="Detections kept as new labels (CutLER: 0.7, then 0.65).",
)
@click.option(
    "--merge-iou",
    type=float,
    default=0.5,
    show_default=True,
    help="Previous labels overlapping no kept detection by this much are carried over.",
)
@click.option(
    "--from-scratch",
    is_flag=True,
    help="Train the new detector from scratch instead of from the previous round's weights.",
)
@_training_options
def self_train(
    checkpoint: str,
    coco_file: str,
    score_threshold: float,
    merge_iou: float,
    from_scratch: bool,
    images_dir: str,
    out_dir: str,
    **training: Any,
) -> None:
    """One self-training round: detect, keep confident boxes, merge, train the next detector.

    The new detector continues from the previous one's weights (as CutLER does), with its
    architecture (masks, backbone), unless --from-scratch is given.
    """
    from zerolabel.cad import read_checkpoint

    previous_labels = read_coco(coco_file)
    previous = read_checkpoint(checkpoint)["config"]  # names the file if it is no detector
    settings = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "coco": str(Path(coco_file).resolve()),
        "score_threshold": score_threshold,
        "merge_iou": merge_iou,
    }
    coco_path = _round_labels(
        settings, previous_labels, Path(images_dir), Path(out_dir), training["device"]
    )
    if not from_scratch:  # the previous detector's architecture, and its weights to start from
        if training["masks"] is None:
            training["masks"] = bool(previous["masks"])
        training["backbone_checkpoint"] = training["backbone_checkpoint"] or previous.get(
            "backbone_checkpoint"
        )
        if training["trainable_backbone_layers"] is None:
            training["trainable_backbone_layers"] = previous.get("trainable_backbone_layers")
        training["init_weights"] = settings["checkpoint"]
    config = _cad_config(read_coco(coco_path), **training)
    _train_and_export(config, coco_path, images_dir, out_dir)


def _round_labels(
    settings: dict[str, Any], previous: dict[str, Any], images_dir: Path, out: Path, device: str
) -> Path:
    """The round's labels ``out/coco.json``: detected now, or those of this round's stopped run.

    Raises:
        ConfigError: ``out`` holds the training run of a round with other settings.
    """
    from zerolabel.cad import CHECKPOINT_NAME, self_training_round
    from zerolabel.errors import ConfigError

    labels_path, settings_path = out / "coco.json", out / "round.json"
    if (out / CHECKPOINT_NAME).is_file() and settings_path.is_file():
        saved = json.loads(settings_path.read_text(encoding="utf-8"))
        if saved != settings:
            raise ConfigError(
                f"{out} holds the training run of another self-training round ({settings_path}): "
                "use a new -o folder, or that round's --checkpoint, --coco and thresholds"
            )
        if labels_path.is_file():
            click.echo(f"resuming this round, on its labels {labels_path}", err=True)
            return labels_path
    threshold = settings["score_threshold"]
    detections = _detect_all(
        settings["checkpoint"], previous["images"], images_dir, device, threshold
    )
    labels = self_training_round(
        previous, detections, score_threshold=threshold, merge_iou=settings["merge_iou"]
    )
    write_json(labels_path, labels)
    write_json(settings_path, settings)
    total = len(labels["annotations"])
    kept = sum(1 for found in detections.values() for _, score, _ in found if score >= threshold)
    click.echo(
        f"round labels: {total} objects = {kept} detections kept (score >= {threshold}) + "
        f"{total - kept} previous labels carried over (previous round: "
        f"{len(previous['annotations'])}) -> {labels_path}",
        err=True,
    )
    return labels_path


def _detect_all(
    checkpoint: str, images: list[dict[str, Any]], images_dir: Path, device: str, threshold: float
) -> dict[int, Any]:
    """The detections of the previous round's detector on every image, with progress."""
    from zerolabel.cad import detect, load_detector
    from zerolabel.io.images import ImageLimits, load_file
    from zerolabel.progress import stage, track
    from zerolabel.vit.backbone import pick_device

    torch_device = pick_device(device)
    with stage(f"loading detector {Path(checkpoint).name} on {torch_device}", done="loaded"):
        model, _ = load_detector(checkpoint, torch_device)
    return {
        image["id"]: detect(
            model,
            load_file(images_dir / image["file_name"], ImageLimits()),
            score_threshold=threshold,
        )
        for image in track(images, "detecting", unit="image")
    }
