"""Waiting out a Redis outage: redis-py's capped exponential backoff, logged once per outage.

What it adds to RQ: RQ's worker loop waits for Redis only inside its blocking dequeue (logging
every retry); Redis going away anywhere else (the suspension check, maintenance, a heartbeat, a
job's bookkeeping) ends the loop. The worker (:mod:`zerolabel.queue.worker`) sends every such
error here instead. Redis is away when connections are refused or reset, commands time out, or
it answers LOADING while it replays its append-only file (redis-py raises
``BusyLoadingError``, a ``ConnectionError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from redis.backoff import AbstractBackoff, ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis is away for now (not a bad command)."""

PAUSES = ExponentialBackoff(cap=5.0, base=0.5)
"""Pauses between pings while Redis is away: 0.5 s, doubling up to 5 s."""


def wait_for_redis(
    redis: Redis,
    cause: BaseException,
    *,
    backoff: AbstractBackoff = PAUSES,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Ping Redis with ``backoff``'s pauses until it answers; False if asked to stop.

    Logs a warning when the wait starts and one line when Redis is back, nothing in between.
    """
    logger.warning(
        "Redis unreachable (%s: %s); waiting for it to come back", type(cause).__name__, cause
    )
    started = time.monotonic()
    failures = 0
    while not should_stop():
        sleep(backoff.compute(failures))
        failures += 1
        try:
            redis.ping()
        except REDIS_DOWN:
            continue
        logger.warning("Redis is back after %.1f s; resuming", time.monotonic() - started)
        return True
    return False
