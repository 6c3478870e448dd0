"""The options a ``prelabel`` run uses: the project's ML backend Extra params, or ``--options``.

Label Studio sends each ML backend connection's "Extra params" to ``/setup``, and the backend
predicts with them; ``prelabel`` must use the same options or it writes a second
``model_version`` next to the backend's, and the "latest version" the other commands pick
changes without a word. So a run without ``--options`` takes the connection's extra params, and
a run whose ``--options`` give another version than a connection's is refused before anything
is queued or written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from zerolabel.errors import ConfigError
from zerolabel.labelstudio.options import ProjectOptions


class BackendLister(Protocol):
    """The part of the Label Studio client this module uses."""

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]: ...


def project_options(
    client: BackendLister,
    project_id: int,
    given: ProjectOptions | None,
    version_of: Callable[[ProjectOptions], str],
) -> ProjectOptions:
    """The options to pre-label with, so that they write the backend's ``model_version``.

    Args:
        client: reads the project's ML backend connections.
        project_id: the project.
        given: the ``--options`` of the command line (None: not given).
        version_of: the ``model_version`` some options give for this project.

    Returns:
        ``given`` when it matches every connection (or there is none); else the connections'
        options when they all agree; else empty options (the environment's defaults).

    Raises:
        ConfigError: a connection's extra params cannot be parsed, connections disagree and no
            ``--options`` were given, or ``--options`` give another version than a connection.
    """
    connections = [
        (_name(conn), _parse(conn), conn.get("extra_params"))
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
        return given
    versions = {version_of(options): (name, options) for name, options, _ in connections}
    if len(versions) > 1:
        listed = "; ".join(f"{name} predicts {v}" for v, (name, _) in versions.items())
        raise ConfigError(
            f"the project's ML backend connections disagree ({listed}): give --options to "
            "choose, and align the connections' Extra params"
        )
    return next(iter(versions.values()))[1] if versions else ProjectOptions()


def _parse(connection: dict[str, Any]) -> ProjectOptions:
    try:
        return ProjectOptions.parse(connection.get("extra_params"))
    except ConfigError as exc:
        raise ConfigError(f"ML backend connection {_name(connection)}: {exc}") from None


def _name(connection: dict[str, Any]) -> str:
    title = connection.get("title") or "untitled"
    return f"{title!r} ({connection.get('url', 'no url')})"


def _show(raw: Any) -> str:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return " ".join(raw.split())
    return json.dumps(raw, sort_keys=True) if raw else "none"
