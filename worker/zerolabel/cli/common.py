"""Helpers shared by ``zerolabel`` commands: settings, Label Studio, JSON files, inputs, method
parameters.

Failures are raised as they are (ConfigError, ValueError, OSError, :class:`JSONFileError`...):
:mod:`zerolabel.cli.errors` turns them into one line for the user.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

import click

from zerolabel import methods
from zerolabel.cli.errors import remember_url
from zerolabel.errors import JSONFileError
from zerolabel.io.images import IMAGE_SUFFIXES


def worker_settings() -> Any:
    """:class:`~zerolabel.settings.WorkerSettings` from the environment."""
    from zerolabel.settings import WorkerSettings

    return WorkerSettings.from_env()


def ls_client(settings: Any) -> Any:
    """A Label Studio client from ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY``."""
    from zerolabel.labelstudio.client import LabelStudioClient

    if not settings.ls_url or not settings.ls_token:
        raise click.UsageError("--project needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    remember_url("label_studio", settings.ls_url)
    return LabelStudioClient(settings.ls_url, settings.ls_token)


def project_tasks(client: Any, project: int | None) -> list[dict[str, Any]]:
    """Every task with its full annotations and predictions (Label Studio's JSON export lists
    predictions by id only), read page by page with progress."""
    from zerolabel.progress import track

    return list(track(client.tasks(project), f"reading project {project}", unit="task"))


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def read_json(path: str | Path) -> Any:
    """The decoded file; OSError (with the path) or :class:`JSONFileError` (file, line)."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONFileError(path, exc) from None


def read_object(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (``what`` names it in the error)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {what} (a JSON object), found {_json_kind(data)}")
    return data


def read_tasks(path: str | Path) -> list[dict[str, Any]]:
    """Label Studio tasks: a JSON list of task objects (``predict`` output or a JSON export)."""
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(task, dict) for task in data):
        found = _json_kind(data) if not isinstance(data, list) else "a list of other values"
        raise ValueError(
            f"{path}: expected Label Studio tasks (a JSON list of task objects), found {found}"
        )
    return data


def read_coco(path: str | Path) -> dict[str, Any]:
    """A COCO detection file: an object with ``images`` and ``annotations`` lists."""
    coco = read_object(path, "COCO detection labels")
    missing = [key for key in ("images", "annotations") if not isinstance(coco.get(key), list)]
    if missing:
        raise ValueError(f"{path}: not COCO detection labels: no {' or '.join(missing)} list")
    return coco


def _json_kind(data: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if data is None:
        return "null"
    return kinds.get(type(data), "a number")


def image_url(task: dict[str, Any]) -> str:
    """The task's image URL; ValueError naming the task when it has none."""
    from zerolabel.formats.export import detect_image_key

    data = task.get("data")
    key = detect_image_key([task])
    if not isinstance(data, dict) or not isinstance(data.get(key), str):
        raise ValueError(f"task {task.get('id')}: no '{key}' image URL in its data")
    return str(data[key])


def file_loader(document_root: Path, url_prefix: str, settings: Any) -> Any:
    """Task -> image, for tasks whose image URLs name files below ``document_root``."""
    from zerolabel.io.images import ImageLimits, load_file

    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)

    def load(task: dict[str, Any]) -> Any:
        url = image_url(task)
        relative = url.removeprefix(url_prefix) if url.startswith(url_prefix) else url
        return load_file(document_root / relative, limits)

    return load


def cli_fetcher(settings: Any) -> tuple[Any, Any]:
    """A fetcher for Label Studio's images with the configured key, and the image limits."""
    from zerolabel.io.fetch import Fetcher, FetchPolicy
    from zerolabel.io.images import ImageLimits

    fetcher = Fetcher(FetchPolicy.from_settings(settings, settings.ls_sites().primary))
    return fetcher, ImageLimits(settings.max_image_bytes, settings.max_image_pixels)


def url_loader(settings: Any) -> Any:
    """Task -> image, downloaded from Label Studio with the configured key."""
    fetcher, limits = cli_fetcher(settings)
    return lambda task: fetcher.fetch(image_url(task), limits)


def expand_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files, folders (recursively, image suffixes only) and glob patterns -> sorted unique paths.

    A named file is kept whatever its suffix, so a bad file is reported rather than skipped.

    Raises:
        click.UsageError: a pattern matches no file, or the inputs hold no image at all (checked
            here, before any model is loaded).
    """
    found: dict[str, Path] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            matches = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        elif path.exists():
            matches = [path]
        else:
            matches = [Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file()]
            if not matches:
                raise click.BadParameter(f"{item!r} matches no file", param_hint="INPUTS")
        for match in matches:
            found.setdefault(str(match.resolve()), match)
    if not found:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise click.UsageError(
            f"no image in {', '.join(map(repr, inputs))}: folders are searched for {suffixes}"
        )
    return sorted(found.values(), key=lambda p: str(p))


def parse_params(pairs: tuple[str, ...], method: str) -> dict[str, Any]:
    """``key=value`` pairs -> keyword arguments of ``method``, typed by its registered types.

    Raises:
        click.BadParameter: a pair without ``=``.
        ConfigError: an unknown method or parameter, or a value of the wrong type; the message
            names the method's parameters with their types.
    """
    texts: dict[str, str] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        texts[key.strip()] = raw
    return methods.get(method).parse_params(texts)
