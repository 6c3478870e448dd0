"""Waiting out a Redis outage: capped exponential backoff, logged once per outage.

Redis is away when connections are refused or reset, commands time out, or it answers LOADING
while it replays its append-only file (redis-py raises ``BusyLoadingError``, a
``ConnectionError``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from zerolabel.errors import DiscoveryError

logger = logging.getLogger(__name__)

REDIS_DOWN: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis is away for now (not a bad command)."""


class RedisUnavailable(DiscoveryError):
    """Redis went away in the middle of an operation; raised to reach the code that waits."""


class Backoff:
    """Pauses that double from ``first_s`` up to ``cap_s``.

    Args:
        first_s: the first pause.
        cap_s: the longest pause.
    """

    def __init__(self, first_s: float = 0.5, cap_s: float = 5.0) -> None:
        self.first_s = first_s
        self.cap_s = cap_s

    def pauses(self) -> Callable[[], float]:
        """A fresh sequence of pauses: each call returns the next one."""
        state = {"next": self.first_s}

        def pause() -> float:
            current = state["next"]
            state["next"] = min(current * 2, self.cap_s)
            return current

        return pause


def wait_for_redis(
    redis: Redis,
    cause: BaseException,
    *,
    backoff: Backoff | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Ping Redis with capped exponential backoff until it answers; False if asked to stop.

    Logs a warning when the wait starts and one line when Redis is back, nothing in between.
    """
    logger.warning(
        "Redis unreachable (%s: %s); waiting for it to come back", type(cause).__name__, cause
    )
    started = time.monotonic()
    pause = (backoff or Backoff()).pauses()
    while not should_stop():
        sleep(pause())
        try:
            redis.ping()
        except REDIS_DOWN:
            continue
        logger.warning("Redis is back after %.1f s; resuming", time.monotonic() - started)
        return True
    return False
