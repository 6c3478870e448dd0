"""``zerolabel train-cad`` and ``self-train``: a class-agnostic detector from exported labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from zerolabel.cli.common import read_coco, write_json


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
        click.option("--iterations", type=int, default=1000, show_default=True),
        click.option("--batch-size", type=int, default=2, show_default=True),
        click.option("--lr", type=float, default=0.0025, show_default=True),
        click.option(
            "--masks/--no-masks",
            default=None,
            help="Mask R-CNN or Faster R-CNN [default: masks when the COCO has them].",
        ),
        click.option(
            "--backbone-checkpoint",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="ResNet-50 weights to start from (e.g. DINO ResNet-50).",
        ),
        click.option(
            "--min-size",
            type=int,
            default=512,
            show_default=True,
            help="Detector input: shorter side resized to this...",
        ),
        click.option(
            "--max-size",
            type=int,
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
    from zerolabel.vit.backbone import pick_device

    if masks is None:
        masks = any(a.get("segmentation") for a in coco.get("annotations", []))
    device = str(pick_device(kwargs.pop("device")))
    return CadConfig(masks=masks, device=device, **kwargs)


def _train_and_name(config: Any, coco_path: Path, images_dir: str, out_dir: str) -> Path:
    """Train, then copy the final checkpoint to a content-named file (a distinct model_version)."""
    import hashlib
    import shutil

    from zerolabel.cad import train

    last = train(config, coco_path, images_dir, out_dir)
    digest = hashlib.sha256(last.read_bytes()).hexdigest()[:10]
    named = Path(out_dir) / f"cad-{digest}.pt"
    shutil.copyfile(last, named)
    click.echo(
        f"detector: {named}\nserve it with ZEROLABEL_METHOD=cad "
        f"ZEROLABEL_CAD_CHECKPOINT={named} (backend and workers)",
        err=True,
    )
    return named


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
    """Train a class-agnostic detector (one 'object' class) on exported labels."""
    config = _cad_config(read_coco(coco_file), **training)
    _train_and_name(config, Path(coco_file), images_dir, out_dir)


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
@_training_options
def self_train(
    checkpoint: str,
    coco_file: str,
    score_threshold: float,
    merge_iou: float,
    images_dir: str,
    out_dir: str,
    **training: Any,
) -> None:
    """One self-training round: detect, keep confident boxes, merge, train the next detector."""
    from zerolabel.cad import detect, load_detector, self_training_round
    from zerolabel.io.images import ImageLimits, load_file
    from zerolabel.vit.backbone import pick_device

    previous = read_coco(coco_file)
    model, _ = load_detector(checkpoint, pick_device(training["device"]))
    detections = {
        image["id"]: detect(
            model,
            load_file(Path(images_dir) / image["file_name"], ImageLimits()),
            score_threshold=score_threshold,
        )
        for image in previous["images"]
    }
    labels = self_training_round(
        previous, detections, score_threshold=score_threshold, merge_iou=merge_iou
    )
    coco_path = write_json(Path(out_dir) / "coco.json", labels)
    click.echo(
        f"round labels: {len(labels['annotations'])} objects "
        f"(previous {len(previous['annotations'])}) -> {coco_path}",
        err=True,
    )
    config = _cad_config(labels, **training)
    _train_and_name(config, coco_path, images_dir, out_dir)
