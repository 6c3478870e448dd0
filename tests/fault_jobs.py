"""Job functions that misbehave, enqueued by fault tests in place of the discovery job.

Worker processes started by the tests import them by name (``tests.fault_jobs.<function>``);
nothing in the library refers to them.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from rq import get_current_job


def kill_own_worker(request: dict[str, Any]) -> None:
    """Stop the worker process running it at once, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def never_succeeds(request: dict[str, Any]) -> None:
    """Count the run under ``test:runs:<job id>``, then fail as a bad method parameter does."""
    job = get_current_job()
    assert job is not None
    job.connection.incr(f"test:runs:{job.id}")
    raise ValueError("k_patches must be at least 1")
