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

from zerolabel.labelstudio.client import LabelStudioClient, LabelStudioError

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
        if client.project(project_id).get("model_version") == version:
            return True
        client.request("PATCH", f"/api/projects/{project_id}", json={"model_version": version})
    except LabelStudioError as exc:
        logger.warning(
            "project %s: could not set its model version to %s (%s); the Data Manager's "
            "Prediction score column stays empty until it is chosen in the project's Settings > "
            "Annotation > 'Use predictions to prelabel tasks'",
            project_id,
            version,
            exc,
        )
        return False
    logger.info(
        "project %s: model version set to %s (Prediction score column)", project_id, version
    )
    return True
