"""``zerolabel`` commands of the labeling loop: cluster, relabel, export, prelabel, train-cad.

Folder and project variants share their core; project variants talk to Label Studio with
``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` (legacy token or personal access token).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from zerolabel.cli.options import local_files_options
from zerolabel.errors import DiscoveryError

logger = logging.getLogger("zerolabel")

_project = click.option(
    "--project",
    type=int,
    default=None,
    help="Label Studio project id (LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY).",
)
_model_version = click.option(
    "--model-version", default=None, help="Which predictions to use [default: each task's latest]."
)


def _settings() -> Any:
    from zerolabel.settings import WorkerSettings

    return WorkerSettings.from_env()


def _client(settings: Any) -> Any:
    from zerolabel.labelstudio.client import LabelStudioClient

    if not settings.ls_url or not settings.ls_token:
        raise click.UsageError("--project needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    return LabelStudioClient(settings.ls_url, settings.ls_token)


def _project_tasks(client: Any, project: int | None) -> list[dict[str, Any]]:
    """Every task with its full annotations and predictions (Label Studio's JSON export lists
    predictions by id only)."""
    return list(client.tasks(project))


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"{path}: {exc}") from None


def _image_url(task: dict[str, Any]) -> str:
    from zerolabel.formats.export import detect_image_key

    return str(task["data"][detect_image_key([task])])


def _file_loader(document_root: Path, url_prefix: str, settings: Any) -> Any:
    """Task -> image, for tasks whose image URLs name files below ``document_root``."""
    from zerolabel.io.images import ImageLimits, load_file

    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)

    def load(task: dict[str, Any]) -> Any:
        url = _image_url(task)
        relative = url.removeprefix(url_prefix) if url.startswith(url_prefix) else url
        return load_file(document_root / relative, limits)

    return load


def _url_loader(settings: Any) -> Any:
    """Task -> image, downloaded from Label Studio with the configured token."""
    from zerolabel.io.fetch import Fetcher, FetchPolicy
    from zerolabel.io.images import ImageLimits

    fetcher = Fetcher(
        FetchPolicy(
            ls_url=settings.ls_url,
            ls_token=settings.ls_token,
            allowed_hosts=settings.allowed_hosts,
            timeout_s=settings.fetch_timeout_s,
        )
    )
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    return lambda task: fetcher.fetch(_image_url(task), limits)


@click.command()
@click.argument("tasks_file", required=False, type=click.Path(exists=True, dir_okay=False))
@_project
@_model_version
@click.option(
    "-k",
    "--clusters",
    "k",
    type=int,
    default=None,
    help="Number of pseudo-classes [default: suggested by silhouette score].",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="zerolabel-out",
    show_default=True,
    help="Folder for the labelled tasks (folder mode).",
)
@local_files_options
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=str(Path.home() / ".cache" / "zerolabel" / "descriptors"),
    show_default=True,
    help="Descriptor cache (by image content): re-clustering computes nothing again.",
)
def cluster(
    tasks_file: str | None,
    project: int | None,
    model_version: str | None,
    k: int | None,
    seed: int,
    out_dir: str,
    document_root: str,
    url_prefix: str,
    cache_dir: str,
) -> None:
    """Group discovered objects into pseudo-classes (cluster_00, ...) with K-Means.

    Give the tasks.json of `zerolabel predict` (folder mode) or --project: the labels are then
    added to the project's labeling config and every prediction is relabelled in place.
    """
    from zerolabel.labelstudio.label_config import add_labels, default_config
    from zerolabel.loop.pseudo_classes import cluster_tasks, labelled_tasks
    from zerolabel.vit.backbone import load_configured_backbone
    from zerolabel.vit.descriptors import DescriptorCache

    if (tasks_file is None) == (project is None):
        raise click.UsageError("give either TASKS_FILE or --project")
    settings = _settings()
    try:
        client = _client(settings) if project is not None else None
        tasks = _project_tasks(client, project) if client else _read_json(str(tasks_file))
        loader = (
            _url_loader(settings)
            if client
            else _file_loader(Path(document_root), url_prefix, settings)
        )
        backbone = load_configured_backbone(settings)
        run = cluster_tasks(
            tasks,
            loader,
            backbone,
            DescriptorCache(Path(cache_dir)),
            k=k,
            seed=seed,
            model_version=model_version,
        )
        labelled = labelled_tasks(tasks, run, model_version=model_version)
        if client is not None:
            client.set_label_config(project, add_labels(client.label_config(project), run.names))
            _update_predictions(client, tasks, labelled, model_version)
        else:
            out = Path(out_dir)
            _write_json(out / "tasks.json", labelled)
            _write_json(out / "clusters.json", {name: name for name in run.names})
            (out / "label_config.xml").write_text(default_config(run.names))
    except DiscoveryError as exc:
        raise click.ClickException(str(exc)) from None
    sizes = ", ".join(f"{name}: {n}" for name, n in sorted(run.sizes().items()))
    click.echo(
        f"{len(run.names)} pseudo-classes over {sum(run.sizes().values())} objects "
        f"({sizes}); {len(run.failures)} task(s) not described",
        err=True,
    )


def _update_predictions(
    client: Any,
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    model_version: str | None,
) -> int:
    from zerolabel.loop.pseudo_classes import chosen_prediction

    updated = 0
    for old, new in zip(before, after, strict=True):
        old_pred = chosen_prediction(old, model_version)
        new_pred = chosen_prediction(new, model_version)
        if old_pred and new_pred and old_pred.get("result") != new_pred.get("result"):
            client.update_prediction(old_pred["id"], new_pred["result"])
            updated += 1
    return updated


@click.command()
@click.argument("tasks_file", required=False, type=click.Path(exists=True, dir_okay=False))
@_project
@_model_version
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
    """Rename or merge pseudo-classes everywhere they are used, from a mapping file."""
    from zerolabel.labelstudio.label_config import add_labels
    from zerolabel.loop.pseudo_classes import map_task_labels

    if (tasks_file is None) == (project is None):
        raise click.UsageError("give either TASKS_FILE or --project")
    mapping = _read_json(mapping_file)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise click.BadParameter(
            "the mapping must be a JSON object of names", param_hint="--mapping"
        )
    settings = _settings()
    try:
        client = _client(settings) if project is not None else None
        tasks = _project_tasks(client, project) if client else _read_json(str(tasks_file))
        relabelled = map_task_labels(tasks, mapping, model_version=model_version)
    except (ValueError, DiscoveryError) as exc:
        raise click.ClickException(str(exc)) from None
    if client is not None:
        names = sorted(set(mapping.values()))
        client.set_label_config(project, add_labels(client.label_config(project), names))
        count = _update_predictions(client, tasks, relabelled, model_version)
        click.echo(f"relabelled {count} prediction(s) in project {project}", err=True)
    else:
        target = Path(out_file or str(tasks_file))
        _write_json(target, relabelled)
        click.echo(f"wrote {target}", err=True)


@click.command()
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A Label Studio JSON export instead of --project.",
)
@_project
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option(
    "-f",
    "--format",
    "formats",
    type=click.Choice(["coco", "yolo", "voc"]),
    multiple=True,
    default=("coco", "yolo", "voc"),
    show_default=True,
)
@click.option(
    "--labels/--class-agnostic",
    default=False,
    show_default=True,
    help="Keep the team's labels, or one 'object' class.",
)
@click.option(
    "--source",
    type=click.Choice(["annotations", "predictions"]),
    default="annotations",
    show_default=True,
    help="Corrected annotations, or raw pre-labels (predictions).",
)
@_model_version
@click.option(
    "--download-images",
    is_flag=True,
    help="Also save each task's image under OUT/images (for train-cad).",
)
def export(
    from_file: str | None,
    project: int | None,
    out_dir: str,
    formats: tuple[str, ...],
    labels: bool,
    source: str,
    model_version: str | None,
    download_images: bool,
) -> None:
    """Export a project's labels to COCO (boxes + RLE masks), YOLO and Pascal VOC."""
    from zerolabel.formats.export import export as write_export

    if (from_file is None) == (project is None):
        raise click.UsageError("give either --from-file or --project")
    settings = _settings()
    try:
        data = (
            _project_tasks(_client(settings), project)
            if project is not None
            else _read_json(str(from_file))
        )
        written = write_export(
            data,
            Path(out_dir),
            formats=formats,
            class_agnostic=not labels,
            source=source,
            model_version=model_version,
        )
        if download_images:
            written["images"] = _download_images(data, Path(out_dir) / "images", settings)
    except (ValueError, DiscoveryError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = json.loads(Path(written["summary"]).read_text())
    click.echo(json.dumps(summary.get("summary", summary), indent=1), err=True)
    for name, path in written.items():
        click.echo(f"  {name}: {path}", err=True)


def _download_images(data: list[dict[str, Any]], folder: Path, settings: Any) -> Path:
    from PIL import Image

    from zerolabel.errors import ImageLoadError
    from zerolabel.formats.export import file_name_from_url

    load = _url_loader(settings)
    failed = 0
    for task in data:
        target = folder / file_name_from_url(_image_url(task))
        if target.exists():
            continue
        try:
            image = load(task)
        except (ImageLoadError, KeyError, ValueError) as exc:
            failed += 1
            logger.error("task %s: image not downloaded: %s", task.get("id"), exc)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.pixels).save(target)
    if failed:
        click.echo(f"{failed} image(s) could not be downloaded", err=True)
    return folder


@click.command()
@click.option("--project", type=int, required=True, help="Label Studio project id.")
@click.option(
    "--options",
    "options_json",
    default=None,
    help="Per-project options as JSON, like the ML backend's extra params: "
    '{"method": "maskcut", "max_side": 640}.',
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
    interrupted run picks up where it stopped. Needs running workers (`zerolabel worker`).
    """
    from zerolabel.labelstudio.options import ProjectOptions
    from zerolabel.loop.prelabel import prelabel_project
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings

    try:
        settings = BackendSettings.from_env()
        with _client(settings.discovery) as client:
            report = prelabel_project(
                client,
                project,
                PredictionService(settings),
                options=ProjectOptions.parse(options_json),
                batch_size=batch_size,
                wait_timeout_s=wait_s,
                worker_ls_url=worker_ls_url,
                progress=True,
            )
    except DiscoveryError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to resume", err=True)
        raise SystemExit(130) from None
    click.echo(report.summary(), err=True)
    if not report.complete:
        raise SystemExit(1)


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
    try:
        config = _cad_config(_read_json(coco_file), **training)
        _train_and_name(config, Path(coco_file), images_dir, out_dir)
    except (ValueError, DiscoveryError) as exc:
        raise click.ClickException(str(exc)) from None


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

    try:
        previous = _read_json(coco_file)
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
        coco_path = _write_json(Path(out_dir) / "coco.json", labels)
        click.echo(
            f"round labels: {len(labels['annotations'])} objects "
            f"(previous {len(previous['annotations'])}) -> {coco_path}",
            err=True,
        )
        config = _cad_config(labels, **training)
        _train_and_name(config, coco_path, images_dir, out_dir)
    except (ValueError, DiscoveryError) as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = [cluster, relabel, export, prelabel, train_cad, self_train]
