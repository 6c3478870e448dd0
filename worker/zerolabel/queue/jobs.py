"""The RQ entry point discovery jobs are enqueued under, and the worker process's runtime.

What it adds to RQ: nothing runs here. RQ needs a function to name in a job
(``zerolabel.queue.jobs.discover``, by string reference, so the backend never imports this
code); ``zerolabel worker`` serves every job of that function in batches and answers it with
the outcome the batch computed (:mod:`zerolabel.queue.batch`). A plain RQ worker that runs the
function gets an error saying so: it would keep no liveness record, so the backend would take
the job for one whose worker died and queue it again.
"""

from __future__ import annotations

import functools
from typing import Any

from zerolabel.errors import DiscoveryError
from zerolabel.queue.dispatch import connect
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings


@functools.cache
def get_runtime() -> WorkerRuntime:
    """The process's runtime, built from the environment on first use and then kept."""
    settings = WorkerSettings.from_env()
    return WorkerRuntime(settings, connect(settings.queue))


def discover(request: dict[str, Any]) -> dict[str, Any]:
    """Refuses to run: discovery jobs are served by ``zerolabel worker``.

    Raises:
        DiscoveryError: always, naming the command that serves these jobs.
    """
    task = request.get("task_id") if isinstance(request, dict) else None
    raise DiscoveryError(
        f"the discovery job of task {task} reached a worker that is not `zerolabel worker`: "
        "discovery jobs are served in batches by `zerolabel worker` (same REDIS_URL and "
        "ZEROLABEL_QUEUE), which keeps the liveness record the backend relies on; stop the "
        "other worker on this queue"
    )


def prompt(request: dict[str, Any]) -> dict[str, Any]:
    """Refuses to run: interactive prompts are served by ``zerolabel worker`` too.

    Raises:
        DiscoveryError: always, naming the command that serves these jobs.
    """
    raise DiscoveryError(
        "an interactive prompt reached a worker that is not `zerolabel worker`: prompts are "
        "served from the features `zerolabel worker` keeps; stop the other worker on this queue"
    )
