"""Which model version a command reads when none is named: the project's latest, said aloud.

``cluster``, ``export --source predictions`` and ``eval`` read one model version's predictions.
Without ``--model-version`` they take the latest one of the project (or file), and their
summary names it and the others (:meth:`VersionChoice.summary`), so a new version written by the
backend or ``prelabel`` never changes what they read without a word.

"Latest" is the version of the most recent prediction: by ``updated_at`` (else ``created_at``)
when every prediction has one, else the version seen last, tasks and predictions in list order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class VersionChoice:
    """The model version to read and the ones present.

    Attributes:
        version: the version to read; None when the tasks hold no prediction (and none was
            named).
        versions: every version present, latest first.
        named: whether the version was named (``--model-version``) rather than picked.
    """

    version: str | None
    versions: tuple[str, ...]
    named: bool

    def summary(self) -> str | None:
        """``using model version X (latest of 3: X, Y, Z)`` when picked, else None."""
        if self.named or self.version is None:
            return None
        if len(self.versions) == 1:
            return f"using model version {self.version} (the only one)"
        listed = ", ".join(self.versions)
        return f"using model version {self.version} (latest of {len(self.versions)}: {listed})"


def choose_model_version(tasks: Sequence[dict[str, Any]], named: str | None) -> VersionChoice:
    """The version ``named``, else the latest version of the tasks' predictions."""
    order = _versions_latest_first(tasks)
    if named is not None:
        return VersionChoice(named, order, True)
    return VersionChoice(order[0] if order else None, order, False)


def _versions_latest_first(tasks: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """Each version once, by its most recent prediction (see the module docstring)."""
    seen: list[tuple[datetime | None, int, str]] = []
    for task in tasks:
        for prediction in task.get("predictions") or []:
            if isinstance(prediction, dict) and prediction.get("model_version") is not None:
                stamp = timestamp(prediction)
                seen.append((stamp, len(seen), str(prediction["model_version"])))
    if all(stamp is not None for stamp, _, _ in seen):
        seen.sort(key=lambda entry: (entry[0], entry[1]))
    latest: dict[str, None] = {}
    for _, _, version in reversed(seen):
        latest.setdefault(version, None)
    return tuple(latest)


def timestamp(item: dict[str, Any]) -> datetime | None:
    """``updated_at``, else ``created_at``, as an aware datetime (naive ones taken as UTC)."""
    text = item.get("updated_at") or item.get("created_at")
    if not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
