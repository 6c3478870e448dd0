"""Stop training cleanly on SIGINT or SIGTERM: finish the step, save, then stop.

While :class:`StopSignals` is active (in the main thread), the first SIGINT (Ctrl-C) or SIGTERM
(``docker stop``, ``kill``) only records the request: the training loop finishes its current
iteration, writes its checkpoint and raises :class:`TrainingInterrupted`; a validation under way
(its checkpoint already written) gives up at the next image. A second signal
raises :class:`KeyboardInterrupt` at once; the checkpoint written before stays intact, because
checkpoints are replaced atomically. Outside the main thread nothing is installed and signals
keep Python's default behaviour.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving ``checkpoint`` at ``iteration``.

    A :class:`KeyboardInterrupt`, so that ``except Exception`` does not swallow it. Running the
    same training again resumes from the checkpoint.
    """

    def __init__(self, checkpoint: Path, iteration: int, signum: int) -> None:
        super().__init__(f"interrupted at iteration {iteration}: {checkpoint} saved")
        self.checkpoint = checkpoint
        self.iteration = iteration
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + self.signum


class StopSignals:
    """Context manager: records SIGINT/SIGTERM in :attr:`signum` instead of stopping at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now, the last checkpoint stays
        self.signum = signum
        logger.warning(
            "%s received: finishing this iteration, then saving a checkpoint "
            "(send it again to stop at once)",
            signal.Signals(signum).name,
        )
