"""Point a Label Studio project at our model version, so its "Prediction score" column fills.

Label Studio 1.23 shows in the Data Manager's "Prediction score" column (``predictions_score``
in the task API) the mean score of a task's predictions whose ``model_version`` equals the
*project's* ``model_version``, and the labeling stream shows those predictions. Connecting an
ML backend sets the project's version to the connection's title, which none of our predictions
carry; the version ``/setup`` answers is stored on the connection only (it decides which tasks
"Retrieve Predictions" skips). ``zerolabel prelabel`` therefore sets the project's version to
the one it writes, once at least one prediction of it exists: Label Studio refuses a version
that is neither a connection's title nor carried by a prediction.
"""

from __future__ import annotations

import logging

from zerolabel.errors import LabelStudioError
from zerolabel.labelstudio.client import LabelStudioClient

logger = logging.getLogger(__name__)


def use_model_version(client: LabelStudioClient, project_id: int, version: str) -> bool:
    """Make ``version`` the project's model version (``PATCH /api/projects/{id}``).

    A failure is logged with the way to do it by hand, never raised: the predictions are
    written already, only the score column and the labeling stream's choice depend on it.

    Args:
        client: Label Studio client.
        project_id: the project.
        version: the ``model_version`` our predictions carry.

    Returns:
        Whether the project now has that version.
    """
    try:
        _set_version(client, project_id, version)
    except LabelStudioError as exc:
        _not_set(project_id, version, exc)
        return False
    return True


def _set_version(client: LabelStudioClient, project_id: int, version: str) -> None:
    """The PATCH, unless the project has that version already; logs the change.

    Raises:
        LabelStudioError: Label Studio could not be read or refused the version.
    """
    if client.project(project_id).get("model_version") == version:
        return
    client.request("PATCH", f"/api/projects/{project_id}", json={"model_version": version})
    logger.info(
        "project %s: model version set to %s (Prediction score column)", project_id, version
    )


def _not_set(project_id: int, version: str, exc: LabelStudioError) -> None:
    logger.warning(
        "project %s: could not set its model version to %s (%s); the Data Manager's "
        "Prediction score column stays empty until it is chosen in the project's Settings > "
        "Annotation > 'Use predictions to prelabel tasks'",
        project_id,
        version,
        exc,
    )


def adopt_model_version(client: LabelStudioClient, project_id: int, version: str) -> bool:
    """Make ``version`` the project's model version if Label Studio knows it already.

    For a version just chosen (``zerolabel use``): Label Studio 1.23 accepts a project version
    only once a prediction carries it (or a connection has it as its title), so a version
    without predictions yet is left for ``zerolabel prelabel`` to set when it writes them; that
    is logged, not warned about. Other failures are warned about as in
    :func:`use_model_version`.

    Returns:
        Whether the project now has that version.
    """
    try:
        _set_version(client, project_id, version)
    except LabelStudioError as exc:
        if exc.status == 400 and exc.method == "PATCH":
            logger.info(
                "project %s: no prediction of %s yet; zerolabel prelabel --project %s makes it "
                "the project's model version (Prediction score column) when it writes them",
                project_id,
                version,
                project_id,
            )
            return False
        _not_set(project_id, version, exc)
        return False
    return True
