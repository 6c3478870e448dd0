"""What one ``prelabel`` run did: :class:`PrelabelReport` and its summary for a person."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PrelabelReport:
    """What one run did.

    Attributes:
        model_version: the version the predictions were written with.
        total: tasks in the project.
        skipped_existing: tasks that already had a prediction of this version.
        written: predictions stored by this run.
        failed: ``(task id, reason)`` of tasks left without a prediction (next run retries).
        deferred: tasks not attempted because of ``max_tasks``.
        interrupted: tasks left undone by an interrupt (Ctrl-C).
    """

    model_version: str = ""
    total: int = 0
    skipped_existing: int = 0
    written: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    deferred: int = 0
    interrupted: int = 0

    @property
    def complete(self) -> bool:
        """Whether every task now has a prediction of this version."""
        return not self.failed and not self.deferred and not self.interrupted

    def summary(self, max_failures: int = 10) -> str:
        """A few lines for a person: counts, then up to ``max_failures`` failures."""
        lines = [
            f"{self.total} task(s), model version {self.model_version}: {self.written} written, "
            f"{self.skipped_existing} already pre-labeled, {len(self.failed)} failed"
            + (f", {self.deferred} left for later (max tasks)" if self.deferred else "")
            + (f", {self.interrupted} not done (interrupted)" if self.interrupted else "")
        ]
        lines += [f"  task {task}: {reason}" for task, reason in self.failed[:max_failures]]
        if len(self.failed) > max_failures:
            lines.append(f"  ... and {len(self.failed) - max_failures} more")
        if not self.complete:
            lines.append("Run again to finish: done tasks are skipped.")
        return "\n".join(lines)
