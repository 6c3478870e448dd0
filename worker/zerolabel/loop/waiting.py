"""Waiting for a batch of queued jobs while watching that some worker is still alive.

``prelabel`` queues nothing when no worker has a live heartbeat, and a batch it waits for is
collected in slices of :data:`WORKER_CHECK_S` with the live workers counted in between: when
every worker has stopped (:data:`GONE_AFTER_CHECKS` counts in a row), the wait ends at once
instead of running out its timeout with nobody left to do the work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rq.job import Job

from zerolabel.errors import DiscoveryError
from zerolabel.queue.dispatch import LATE, Ending, Outcome
from zerolabel.queue.service import PredictionService
from zerolabel.sites import without_user_info

WORKER_CHECK_S = 5.0
"""While a batch is waited for, the live workers are counted this often."""

GONE_AFTER_CHECKS = 2
"""Counts in a row with no live worker that end a wait (a worker restarting is not a loss)."""


class BatchWaiter:
    """Collects batches of jobs for one run and tells when no worker is left."""

    def __init__(self, service: PredictionService, wait_timeout_s: float) -> None:
        self.service = service
        self.wait_timeout_s = wait_timeout_s

    @property
    def redis_url(self) -> str:
        return without_user_info(self.service.settings.discovery.queue.redis_url)  # no password

    def live_workers(self) -> int:
        """Workers with a live heartbeat on the queue; DiscoveryError when Redis is away."""
        health = self.service.health()
        if not health.get("reachable"):
            error = health.get("error", "no reply")
            raise DiscoveryError(f"Redis unreachable at {self.redis_url}: {error}")
        return int(health.get("workers", 0))

    def require_workers(self, to_do: int) -> None:
        """Raise DiscoveryError (naming queue, Redis and the fix) when no worker is alive."""
        if not self.live_workers():
            raise self.no_workers(f"{to_do} task(s) to pre-label would wait in the queue")

    def no_workers(self, what: str) -> DiscoveryError:
        """The error of a run with no worker left; ``what`` says what it means for the run."""
        queue = self.service.settings.discovery.queue.queue
        return DiscoveryError(
            f"no live worker on queue {queue!r} at {self.redis_url}: {what}; start "
            "`zerolabel worker` with the same REDIS_URL and ZEROLABEL_QUEUE, then run prelabel "
            "again (tasks already pre-labeled are skipped)"
        )

    def collect(self, jobs: Sequence[Job]) -> tuple[list[Outcome | None], bool]:
        """Wait up to ``wait_timeout_s`` for the jobs, in slices with a worker count between.

        Returns:
            One outcome per job, and whether every worker stopped first; then the jobs that had
            not ended have None, else they have :data:`LATE`.
        """
        outcomes: list[Outcome | None] = [None] * len(jobs)
        budget, absent = self.wait_timeout_s, 0
        for _ in range(max(1, math.ceil(self.wait_timeout_s / WORKER_CHECK_S))):
            waiting = [i for i, outcome in enumerate(outcomes) if outcome is None]
            step = min(WORKER_CHECK_S, budget)
            budget -= step
            got = self.service.dispatcher.collect([jobs[i] for i in waiting], step)
            for index, outcome in zip(waiting, got, strict=True):
                if outcome.ending is not Ending.LATE:
                    outcomes[index] = outcome
            if all(outcome is not None for outcome in outcomes) or budget <= 0:
                break
            absent = 0 if self.live_workers() else absent + 1
            if absent >= GONE_AFTER_CHECKS:
                return outcomes, True
        return [outcome or LATE for outcome in outcomes], False
