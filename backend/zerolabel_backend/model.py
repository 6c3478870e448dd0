"""The label-studio-ml 1.0.9 model class: the only module importing ``label_studio_ml``.

Label Studio instantiates a model per project request; this class stays a thin adapter over
the process-wide :class:`zerolabel.queue.service.PredictionService` (no model, no heavy state here).
"""

from __future__ import annotations

from typing import Any

from label_studio_ml.model import LabelStudioMLBase
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.service import PredictionService, ProjectContext


class ZeroLabelBackend(LabelStudioMLBase):  # type: ignore[misc]
    """Pre-annotates RectangleLabels boxes and BrushLabels masks found without labels."""

    def __init__(
        self,
        label_config: str | None = None,
        train_output: Any = None,
        *,
        service: PredictionService,
        options: ProjectOptions | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.service = service
        self.options = options or ProjectOptions()

    @property
    def context(self) -> ProjectContext:
        return ProjectContext(self.hostname or None, self.access_token or None, self.options)

    @property
    def model_version(self) -> str:
        return self.service.model_version(self.label_config or "", self.options)

    def predict(self, tasks: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, Any]]:
        """One entry per task (label-studio-ml 1.0.9 API)."""
        return self.service.predict(tasks, self.label_config or "", self.context)

    def fit(self, tasks: Any, workdir: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """No training on annotation or project events (the detector loop is a separate job)."""
        return {}
