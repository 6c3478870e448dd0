"""``zerolabel cluster`` and ``export``: pseudo-classes and the labels' way out (``relabel``
and ``clusters-sheet``: :mod:`.relabel`, :mod:`.sheets`).

Each works on a tasks file (folder mode) or on a Label Studio project (``--project``, with
``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``); both share everything but image access.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from zerolabel.cli.common import (
    cli_fetcher,
    file_loader,
    ls_client,
    project_tasks,
    read_tasks,
    url_loader,
    worker_settings,
    write_json,
)
from zerolabel.cli.options import (
    LOCAL_FILES_PREFIX,
    local_files_options,
    model_version_option,
    project_option,
    weights_options,
)
from zerolabel.labelstudio.versions import VersionChoice, choose_model_version

logger = logging.getLogger("zerolabel")


@click.command()
@click.argument("tasks_file", required=False, type=click.Path(exists=True, dir_okay=False))
@project_option
@model_version_option
@click.option(
    "-k",
    "--clusters",
    "k",
    type=click.IntRange(min=1),
    default=None,
    help="Number of pseudo-classes [default: suggested by silhouette score].",
)
@click.option("--seed", type=int, default=0, show_default=True)
@weights_options
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
    backbone: str | None,
    checkpoint: str | None,
    out_dir: str,
    document_root: str,
    url_prefix: str,
    cache_dir: str,
) -> None:
    """Group discovered objects into pseudo-classes (cluster_00, ...) with K-Means.

    Give the tasks.json of `zerolabel predict` (folder mode) or --project: the labels are then
    added to the project's labeling config and every prediction is relabelled in place.
    """
    from zerolabel.labelstudio.config_edit import add_labels, default_config
    from zerolabel.loop.predict import loaded_backbone, with_overrides
    from zerolabel.loop.pseudo_classes import cluster_tasks, labelled_tasks, update_predictions
    from zerolabel.vit.descriptors import DescriptorCache

    if (tasks_file is None) == (project is None):
        raise click.UsageError("give either TASKS_FILE or --project")
    settings = with_overrides(worker_settings(), {"backbone": backbone, "checkpoint": checkpoint})
    client = ls_client(settings) if project is not None else None
    tasks = project_tasks(client, project) if client else read_tasks(str(tasks_file))
    choice = choose_model_version(tasks, model_version)
    model_version = choice.version
    if k is not None:
        _check_enough_objects(tasks, k, model_version)
    loader = (
        url_loader(settings) if client else file_loader(Path(document_root), url_prefix, settings)
    )
    run = cluster_tasks(
        tasks,
        loader,
        loaded_backbone(settings),
        DescriptorCache(Path(cache_dir)),
        k=k,
        seed=seed,
        model_version=model_version,
    )
    labelled = labelled_tasks(tasks, run, model_version=model_version)
    if client is not None:
        config = client.label_config(project)
        if add_labels(config, run.names) != config:
            client.set_label_config(project, add_labels(config, run.names))
        update_predictions(client, tasks, labelled, model_version)
    else:
        out = Path(out_dir)
        write_json(out / "tasks.json", labelled)
        write_json(out / "clusters.json", {name: name for name in run.names})
        (out / "label_config.xml").write_text(default_config(run.names))
    sizes = ", ".join(f"{name}: {n}" for name, n in sorted(run.sizes().items()))
    click.echo(
        f"{len(run.names)} pseudo-classes over {sum(run.sizes().values())} objects "
        f"({sizes}); {len(run.failures)} task(s) not described",
        err=True,
    )
    _echo_choice(choice)


def _check_enough_objects(tasks: list[dict[str, Any]], k: int, model_version: str | None) -> None:
    """Refuse ``-k`` above the number of objects before any image is read or model loaded."""
    from zerolabel.loop.pseudo_classes import chosen_prediction, object_boxes

    count = 0
    for task in tasks:
        prediction = chosen_prediction(task, model_version)
        if prediction is not None:
            count += len(object_boxes(prediction.get("result") or []))
    if k > count:
        raise click.ClickException(
            f"{count} objects cannot make {k} clusters: lower -k to at most {count}"
            if count
            else f"no objects to cluster: the tasks hold no {_predictions(model_version)}"
        )


def _echo_choice(choice: VersionChoice) -> None:
    """Name the model version read when it was picked, not named (see ``VersionChoice``)."""
    line = choice.summary()
    if line is not None:
        click.echo(line, err=True)


def _predictions(model_version: str | None) -> str:
    return f"predictions of model_version {model_version!r}" if model_version else "predictions"


@click.command()
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A Label Studio JSON export instead of --project.",
)
@project_option
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
@model_version_option
@click.option(
    "--download-images",
    is_flag=True,
    help="Also save each exported image, bytes as served (or as found under --document-root), "
    "under OUT/images (for train-cad) and in the YOLO and VOC layouts.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Share of the images (negatives included) held out for validation.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split.")
@click.option(
    "--document-root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Label Studio's local-files document root on this machine: negatives are sized "
    "from their image files there, and --download-images copies them from there.",
)
@click.option(
    "--url-prefix",
    default=LOCAL_FILES_PREFIX,
    show_default=True,
    help="Prefix of local-files image URLs (with --document-root).",
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
    val_fraction: float,
    seed: int,
    document_root: str | None,
    url_prefix: str,
) -> None:
    """Export a project's labels to COCO (boxes + RLE masks), YOLO and Pascal VOC.

    Images annotated as empty are kept as negatives everywhere; their size comes from the
    task's other results, else from the image (--document-root, --download-images).
    """
    from zerolabel.formats import export as fx
    from zerolabel.formats.images import ImageStore, image_sizer, local_file

    if (from_file is None) == (project is None):
        raise click.UsageError("give either --from-file or --project")
    settings = worker_settings()
    data = (
        project_tasks(ls_client(settings), project)
        if project is not None
        else read_tasks(str(from_file))
    )
    choice = None
    if source == "predictions":
        choice = choose_model_version(data, model_version)
        model_version = choice.version
        fx.check_predictions(data, model_version)
    out = Path(out_dir)
    local = local_file(Path(document_root), url_prefix) if document_root else None
    store = ImageStore(out / "images", _fetch_bytes(settings), local) if download_images else None
    ds = fx.read_ls_export(
        data, source=source, model_version=model_version, image_size=image_sizer(local, store)
    )
    if val_fraction:
        fx.split_images(ds, val_fraction, seed)
    if {"yolo", "voc"} & set(formats):
        fx.label_stems(ds)  # clashing label files: fail before any download
    images = store.get_all(ds) if store is not None else None
    meta = {"source": source, "model_version": model_version}
    written = fx.write_dataset(ds, out, formats, not labels, images=images, meta=meta)
    if store is not None:
        written["images"] = store.folder
    summary = json.loads(Path(written["summary"]).read_text())
    click.echo(json.dumps(summary, indent=1), err=True)
    for line in _export_notes(ds, store, download_images or bool(document_root)):
        click.echo(line, err=True)
    for name, path in written.items():
        click.echo(f"  {name}: {path}", err=True)
    if choice is not None:
        _echo_choice(choice)


def _export_notes(ds: Any, store: Any, had_images: bool) -> list[str]:
    """What the user must know: how negatives were sized, what was left out or changed."""
    from zerolabel.formats.export import NO_SIZE

    notes: list[str] = []
    for how, ids in ds.summary()["sized_from"].items():
        notes.append(f"{len(ids)} image(s) sized from {how}: task(s) {_ids(ids)}")
    unsized = [s.task_id for s in ds.skipped if NO_SIZE in s.reason]
    if unsized:
        hint = "" if had_images else "; give --document-root or --download-images"
        notes.append(
            f"{len(unsized)} negative task(s) left out, image size unknown: "
            f"task(s) {_ids(unsized)}{hint}"
        )
    for how, count in sorted(ds.box_mask_conflicts.items()):
        notes.append(f"{count} object(s) whose box and mask disagreed: {how}")
    if store is not None and store.failures:
        notes.append(
            f"{len(store.failures)} image(s) could not be downloaded: {_ids(list(store.failures))}"
        )
    return notes


def _ids(ids: list[Any]) -> str:
    return ", ".join(str(i) for i in ids)


def _fetch_bytes(settings: Any) -> Any:
    """Image URL -> its bytes exactly as Label Studio (or an allowed host) serves them."""
    fetcher, limits = cli_fetcher(settings)
    return lambda url: fetcher.fetch_bytes(url, limits)
