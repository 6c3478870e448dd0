"""The worker's RQ exception handlers: which failures may be retried, and abandoned runs.

What they add to RQ: RQ retries any failure while the job has retries left; here a failure no
re-run can fix (a bad parameter, a bug, the quarantine) fails the job at once, and only transient
trouble (network, Redis going away) uses the retries. RQ's maintenance calls the same handlers
for a job whose worker died and that nobody asked for again (``AbandonedJobError``): its run is
struck like one the backend notices (:mod:`zerolabel.queue.runs`), and at the quarantine RQ
fails it instead of retrying it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from rq.exceptions import AbandonedJobError
from rq.job import Job

from zerolabel.errors import RedisUnavailable, TransientFetchError
from zerolabel.queue.outage import REDIS_DOWN
from zerolabel.queue.runs import QUARANTINE_AFTER, Runs

logger = logging.getLogger(__name__)

AWAY: tuple[type[Exception], ...] = (RedisUnavailable, *REDIS_DOWN)
"""Errors that mean Redis is away for now."""

ExceptionHandler = Callable[
    [Job, type[BaseException] | None, BaseException | None, TracebackType | None], bool
]
"""What RQ calls with a failed job: its exception; True lets the next handler run."""


def is_transient(exc: BaseException) -> bool:
    """Whether running the job again may succeed: network trouble, not a bad request or bug."""
    return isinstance(exc, (TransientFetchError, *AWAY))


def retry_only_transient(
    job: Job,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    """A failure no re-run can fix fails the job now, its retries unused."""
    if exc_value is None or isinstance(exc_value, AbandonedJobError) or is_transient(exc_value):
        return True
    _no_retries(job, f"{type(exc_value).__name__} cannot succeed on a re-run")
    return True


def strike_abandoned(runs: Runs) -> ExceptionHandler:
    """The handler that strikes the runs RQ's maintenance finds abandoned."""

    def handler(
        job: Job,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if isinstance(exc_value, AbandonedJobError) and runs.settle(job) >= QUARANTINE_AFTER:
            _no_retries(job, "it stopped its worker twice")
        return True

    return handler


def _no_retries(job: Job, why: str) -> None:
    if job.retries_left:
        logger.warning("job %s: %s; failing it without retries", job.id, why)
        job.retries_left = 0
