"""RQ entry points, enqueued by string reference (``zerolabel.queue.jobs.discover``)."""

from __future__ import annotations

import functools
import logging
from typing import Any

from rq import get_current_job

from zerolabel.contract import DiscoveryRequest, DiscoveryResult
from zerolabel.errors import ConfigError, DiscoveryError
from zerolabel.queue.answers import answer_for
from zerolabel.queue.dispatch import connect, lease
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.queue.writeback import after_job
from zerolabel.settings import WorkerSettings

logger = logging.getLogger(__name__)


@functools.cache
def get_runtime() -> WorkerRuntime:
    """The process's runtime, built from the environment on first use and then kept."""
    settings = WorkerSettings.from_env()
    return WorkerRuntime(settings, connect(settings.queue))


def discover(request: dict[str, Any]) -> dict[str, Any]:
    """Discover objects in one image; returns a ``DiscoveryResult`` as a dict.

    A request this worker can never serve (an unknown method or parameter, e.g. from a backend
    of another version) answers with an error result instead of failing, so RQ does not retry it.
    A job the worker served in a batch answers with (or raises) the outcome the batch computed
    for it (:mod:`zerolabel.queue.batch`).

    Raises:
        DiscoveryError: the runtime has no Redis connection to hold the job's lease with.
    """
    try:
        parsed = DiscoveryRequest.from_dict(request)
    except ConfigError as exc:
        return refused(request, exc).to_dict()
    job = get_current_job()
    answer = answer_for(job.id) if job else None
    if answer is not None:
        return answer.unwrap().to_dict()
    runtime = get_runtime()
    if runtime.redis is None:
        raise DiscoveryError("the worker runtime has no Redis connection: set REDIS_URL")
    with lease(runtime.redis, job.id if job else None, runtime.settings.queue.lease_s):
        result = runtime.discover(parsed)
        after_job(runtime.redis, runtime.settings, job.id if job else None, result)
    return result.to_dict()


def refused(request: dict[str, Any], exc: ConfigError) -> DiscoveryResult:
    """The error result for a request whose spec cannot be built here."""
    task_id = request.get("task_id")
    logger.error("task %s: request refused: %s", task_id, exc)
    return DiscoveryResult(
        str(request.get("image", "")),
        (0, 0),
        [],
        "",
        task_id if isinstance(task_id, int) else None,
        str(exc),
    )
