"""Point a Label Studio project at a model in one step: the library side of ``zerolabel use``.

A project's model is what its ML backend connection's Extra params choose (method, parameters,
and by file name a detector or fitted file of ``ZEROLABEL_MODELS_DIR``, see
:mod:`zerolabel.model_files`). Switching a project is therefore:

1. :func:`project_connections`: the project's connections, and the Extra params that stay (the
   ones that do not choose the model: ``label``, ``masks``...). A project without a connection,
   or whose connections keep different ones, is refused before anything changes.
2. :func:`install_detector` / :func:`install_fitted`: the model's file is checked (a detector,
   a fitted file of the method's kind and of the project's backbone) and copied into the models
   folder under the name its content gives, through a temporary file and a rename, so a worker
   never reads half a file.
3. :func:`switch_project`: the new Extra params are checked as ``/setup`` checks them, then
   written to every connection with ``PATCH /api/ml/{id}`` (Label Studio calls the backend's
   ``/setup`` with them before it saves: a backend that cannot serve them refuses), and the
   project's model version is set when Label Studio knows it already.

Backend and workers need no restart: the backend plans each request from the project's Extra
params, and workers load a detector or fitted file by name on first use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerolabel import model_files
from zerolabel.errors import ConfigError, LabelStudioError
from zerolabel.labelstudio.client import LabelStudioClient
from zerolabel.labelstudio.options import MODEL_KEYS, ProjectOptions, extra_params_object
from zerolabel.loop.backend_options import connection_name
from zerolabel.loop.project_version import adopt_model_version
from zerolabel.queue.service import PredictionService

logger = logging.getLogger(__name__)

FILE_MODE = 0o644
"""Installed files are readable by every user: workers and backend may run as others."""


@dataclass(frozen=True)
class Connections:
    """A project's ML backend connections and the Extra params a switch keeps.

    Attributes:
        project_id: the project.
        connections: its connections, as Label Studio lists them.
        kept: the Extra params besides the model's, the same on every connection.
    """

    project_id: int
    connections: list[dict[str, Any]]
    kept: dict[str, Any]


@dataclass(frozen=True)
class Switch:
    """What :func:`switch_project` did.

    Attributes:
        extra_params: the Extra params every connection now has.
        model_version: the version the project's predictions now get.
        connections: the connections changed, named.
        project_version: whether the project's model version is already that version.
    """

    extra_params: dict[str, Any]
    model_version: str
    connections: list[str]
    project_version: bool


def project_connections(client: LabelStudioClient, project_id: int) -> Connections:
    """The project's connections and the Extra params that stay when its model changes.

    Raises:
        ConfigError: the project has no connection, or its connections keep different Extra
            params (the message shows them).
    """
    connections = client.ml_backends(project_id)
    if not connections:
        raise ConfigError(
            f"project {project_id} has no ML backend connection: connect the backend first "
            "(Settings > Model > Connect Model; README, Deploying with Label Studio, step 4), "
            "then choose its model with zerolabel use"
        )
    kept = [(connection_name(c), json.dumps(_kept(c), sort_keys=True)) for c in connections]
    if len({shown for _, shown in kept}) > 1:
        listed = "; ".join(f"{name} keeps {shown}" for name, shown in kept)
        raise ConfigError(
            f"the ML backend connections of project {project_id} have different Extra params "
            f"besides the model ({listed}): remove the extra connection or align them in the "
            "project's Model settings, then run this again"
        )
    return Connections(project_id, list(connections), json.loads(kept[0][1]))


def _kept(connection: dict[str, Any]) -> dict[str, Any]:
    """The connection's Extra params that do not choose the model."""
    try:
        params = extra_params_object(connection.get("extra_params"))
    except ConfigError as exc:
        logger.warning(
            "ML backend connection %s: its Extra params are replaced whole (%s)",
            connection_name(connection),
            exc,
        )
        return {}
    return {key: value for key, value in params.items() if key not in MODEL_KEYS}


def switch_project(
    client: LabelStudioClient,
    service: PredictionService,
    connections: Connections,
    model: dict[str, Any],
) -> Switch:
    """Give every connection of the project the Extra params of ``model`` (and the kept ones).

    Args:
        client: Label Studio client.
        service: plans the project's spec exactly as the backend's ``/setup`` does.
        connections: from :func:`project_connections`.
        model: the Extra params that choose the model (keys of
            :data:`~zerolabel.labelstudio.options.MODEL_KEYS`), e.g. ``{"method": "cad",
            "detector": "cad-<digest>.pt"}``.

    Raises:
        ConfigError: the Extra params cannot be served (checked before anything changes), or
            the backend refused them when Label Studio called its ``/setup``.
        LabelStudioError: Label Studio could not be read or written.
    """
    unknown = set(model) - MODEL_KEYS
    if unknown:
        raise ValueError(f"not model choices: {sorted(unknown)}")
    project_id = connections.project_id
    extra = {**connections.kept, **model}
    version = service.model_version(client.label_config(project_id), ProjectOptions.parse(extra))
    changed: list[str] = []
    for connection in connections.connections:
        name = connection_name(connection)
        try:
            stored = client.update_ml_backend(connection, extra)
        except LabelStudioError as exc:
            raise _refused(exc, name, changed) from None
        changed.append(name)
        answered = stored.get("model_version")
        if answered and answered != version:
            logger.warning(
                "the backend of ML backend connection %s answers model version %s for these "
                "Extra params, this command %s: give the backend, the workers and this command "
                "the same settings (one env file)",
                name,
                answered,
                version,
            )
    adopted = adopt_model_version(client, project_id, version)
    return Switch(extra, version, changed, adopted)


def _refused(exc: LabelStudioError, name: str, changed: list[str]) -> Exception:
    """The error for a connection Label Studio did not update (400: its backend refused)."""
    done = f" (already changed: {', '.join(changed)})" if changed else ""
    if exc.status == 400:
        return ConfigError(
            f"Label Studio did not change ML backend connection {name}{done}: {exc.message}"
        )
    return exc


def install_detector(source: str | Path, folder: str | Path) -> str:
    """Copy a detector into the models folder (if it is not there); its name there.

    Args:
        source: a ``cad-<digest>.pt`` export, or a training checkpoint
            (``checkpoint_last.pt``), whose weights-only export is written instead.
        folder: the models folder (created if needed).

    Raises:
        WeightsError: the file is not a zerolabel detector.
    """
    from zerolabel.cad.model import read_checkpoint
    from zerolabel.cad.saving import EXPORT_PREFIX, export_weights

    source, root = Path(source), _folder(folder)
    checkpoint = read_checkpoint(source)  # WeightsError for any other file
    if "optimizer" in checkpoint:  # a training checkpoint: serve its weights only
        return export_weights(source, root).name
    name = f"{EXPORT_PREFIX}{model_files.file_digest(source)[:10]}.pt"  # as export_weights
    return _copy_in(source, root, model_files.check_detector_name(name))


def install_fitted(
    source: str | Path, folder: str | Path, *, kind: str, backbone: str, weights: str
) -> str:
    """Copy a fitted file into the models folder (if it is not there); its name there.

    Args:
        source: a file ``zerolabel rps-fit`` or ``train-found`` wrote.
        folder: the models folder (created if needed).
        kind: the fitted kind the project's method reads.
        backbone: the project's backbone, which the file must have been fitted on.
        weights: the name of that backbone's weights.

    Raises:
        WeightsError: not a fitted file, or one of another kind or backbone.
    """
    from zerolabel.fitted import load_fitted

    source, root = Path(source), _folder(folder)
    fitted = load_fitted(source, kind=kind, backbone=backbone, weights=weights)
    return _copy_in(source, root, model_files.check_fitted_name(fitted.file_name(), kind))


def _folder(folder: str | Path) -> Path:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _copy_in(source: Path, folder: Path, name: str) -> str:
    """``source`` as ``folder/name``, written through a temporary file and a rename."""
    target = folder / name
    if target.is_file() and (
        target.resolve() == source.resolve()
        or model_files.file_digest(target) == model_files.file_digest(source)
    ):
        logger.info("%s is in %s already", name, folder)
        return name
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out, source.open("rb") as data:
            shutil.copyfileobj(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    logger.info("copied %s into %s as %s", source, folder, name)
    return name


def model_source(given: str, folder: str | None, what: str) -> Path | str:
    """What ``--detector`` / ``--fitted`` names: a file to install (a path), or the name of a
    file the models folder holds already (a string).

    Raises:
        ConfigError: neither (the message lists the folder's files of that kind).
    """
    path = Path(given)
    if path.is_file():
        return path
    bare = os.sep not in given and not (os.altsep and os.altsep in given)
    if folder is not None and bare:
        model_files.locate(folder, given, what)  # ConfigError listing the folder's files
        return given
    raise ConfigError(f"{given}: no such {what} file")
