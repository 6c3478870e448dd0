"""The options a ``prelabel`` run uses: the project's ML backend Extra params, or ``--options``.

Label Studio sends each ML backend connection's "Extra params" to ``/setup``, and the backend
predicts with them; ``prelabel`` must use the same options or it writes a second
``model_version`` next to the backend's, and the "latest version" the other commands pick
changes without a word. So a run without ``--options`` takes the connection's extra params, and
a run whose ``--options`` give another version than a connection's is refused before anything
is queued or written. :func:`explain_options` says which options a run uses and where they come
from, and warns when the environment's method is not the one the project runs (switching a
project is ``zerolabel use``'s work, not the environment's).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.methods import MethodKind
from zerolabel.settings import WorkerSettings

logger = logging.getLogger(__name__)

NO_CONNECTION = "the environment (the project has no ML backend connection)"
GIVEN = "--options"


@dataclass(frozen=True)
class ChosenOptions:
    """The options a run uses and where they come from.

    Attributes:
        options: the options.
        source: where from, for messages: :data:`GIVEN`, :data:`NO_CONNECTION`, or the Extra
            params of the project's ML backend connection (named).
    """

    options: ProjectOptions
    source: str


class BackendLister(Protocol):
    """The part of the Label Studio client this module uses."""

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]: ...


def choose_options(
    client: BackendLister,
    project_id: int,
    given: ProjectOptions | None,
    version_of: Callable[[ProjectOptions], str],
) -> ChosenOptions:
    """The options to pre-label with, so that they write the backend's ``model_version``.

    Args:
        client: reads the project's ML backend connections.
        project_id: the project.
        given: the ``--options`` of the command line (None: not given).
        version_of: the ``model_version`` some options give for this project.

    Returns:
        ``given`` when it matches every connection (or there is none); else the connections'
        options when they all agree; else empty options (the environment's defaults); with
        where they come from.

    Raises:
        ConfigError: a connection's extra params cannot be parsed, connections disagree and no
            ``--options`` were given, or ``--options`` give another version than a connection.
    """
    connections = [
        (connection_name(conn), _parse(conn), conn.get("extra_params"))
        for conn in client.ml_backends(project_id)
    ]
    if given is not None:
        wanted = version_of(given)
        for name, options, raw in connections:
            if version_of(options) != wanted:
                raise ConfigError(
                    f"--options give model version {wanted} but ML backend connection {name} "
                    f"predicts {version_of(options)} (its Extra params: {_show(raw)}): drop "
                    "--options to use the connection's, or set its Extra params to the same "
                    "options in the project's Model settings, so both write one model version"
                )
        return ChosenOptions(given, GIVEN)
    versions = {version_of(options): (name, options) for name, options, _ in connections}
    if len(versions) > 1:
        listed = "; ".join(f"{name} predicts {v}" for v, (name, _) in versions.items())
        raise ConfigError(
            f"the project's ML backend connections disagree ({listed}): give --options to "
            "choose, and align the connections' Extra params"
        )
    if not versions:
        return ChosenOptions(ProjectOptions(), NO_CONNECTION)
    name, options = next(iter(versions.values()))
    return ChosenOptions(options, f"the Extra params of its ML backend connection {name}")


def explain_options(
    project_id: int, chosen: ChosenOptions, spec: DiscoverySpec, settings: WorkerSettings
) -> None:
    """Log the model a run uses and where it comes from; warn when the environment's method
    (or default detector) is not it, since the run follows the project, not the environment.
    """
    model = _model(spec)
    if "method" in chosen.options.spec_overrides or chosen.source == NO_CONNECTION:
        logger.info("project %s: %s from %s", project_id, model, chosen.source)
    else:
        logger.info(
            "project %s: %s from ZEROLABEL_METHOD (%s name no method)",
            project_id,
            model,
            chosen.source,
        )
    unused = _unused_setting(chosen, spec, settings)
    if unused is not None:
        logger.warning(
            "%s is not used for project %s: %s choose %s, and prelabel writes what the "
            "backend predicts for the project. To switch the project, run: zerolabel use "
            "--project %s METHOD [--detector FILE] (README, the loop, step 6)",
            unused,
            project_id,
            chosen.source,
            model,
            project_id,
        )


def _model(spec: DiscoverySpec) -> str:
    """``method cad, detector cad-<digest>.pt`` (the files it names, if any)."""
    text = f"method {spec.method}"
    if _detector(spec):
        text += f", detector {spec.weights}"
    if spec.fitted is not None:
        text += f", fitted file {spec.fitted}"
    return text


def _unused_setting(
    chosen: ChosenOptions, spec: DiscoverySpec, settings: WorkerSettings
) -> str | None:
    """The environment's method (or detector) the chosen options override, as ``NAME=value``."""
    if chosen.source == NO_CONNECTION:
        return None
    if settings.method != spec.method:
        return f"ZEROLABEL_METHOD={settings.method}"
    default = settings.cad_checkpoint
    if _detector(spec) and default and os.path.basename(default) != spec.weights:
        return f"ZEROLABEL_CAD_CHECKPOINT={default}"
    return None


def _detector(spec: DiscoverySpec) -> bool:
    return methods.get(spec.method).kind is MethodKind.DETECTOR


def _parse(connection: dict[str, Any]) -> ProjectOptions:
    try:
        return ProjectOptions.parse(connection.get("extra_params"))
    except ConfigError as exc:
        raise ConfigError(f"ML backend connection {connection_name(connection)}: {exc}") from None


def connection_name(connection: dict[str, Any]) -> str:
    """How messages name an ML backend connection: ``'title' (url)``."""
    title = connection.get("title") or "untitled"
    return f"{title!r} ({connection.get('url', 'no url')})"


def _show(raw: Any) -> str:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return " ".join(raw.split())
    return json.dumps(raw, sort_keys=True) if raw else "none"
