"""Which job failures RQ may retry: transient trouble only (network, Redis going away)."""

from __future__ import annotations

import logging
from types import TracebackType

from rq.exceptions import AbandonedJobError
from rq.job import Job

from zerolabel.io.fetch import TransientFetchError
from zerolabel.queue.outage import REDIS_DOWN, RedisUnavailable

logger = logging.getLogger(__name__)

AWAY: tuple[type[Exception], ...] = (RedisUnavailable, *REDIS_DOWN)
"""Errors that mean Redis is away for now."""


def is_transient(exc: BaseException) -> bool:
    """Whether running the job again may succeed: network trouble, not a bad request or bug."""
    return isinstance(exc, (TransientFetchError, *AWAY))


def retry_only_transient(
    job: Job,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    tb: TracebackType | None,
) -> bool:
    """RQ exception handler: a failure no re-run can fix fails the job now, retries unused."""
    if exc_value is None or isinstance(exc_value, AbandonedJobError) or is_transient(exc_value):
        return True
    if job.retries_left:
        logger.warning(
            "job %s: %s cannot succeed on a re-run; failing it without retries",
            job.id,
            type(exc_value).__name__,
        )
        job.retries_left = 0
    return True
