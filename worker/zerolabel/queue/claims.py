"""Which waiting jobs join a worker's batch, and taking them off the queue.

What it adds to RQ: RQ's dequeue hands a worker one job. A worker that batches then looks at the
first ``window`` job ids waiting in the same queue and picks the discovery jobs whose request
names the same spec; jobs of other specs, and jobs of other functions, stay where they are. The
picked jobs enter the worker's liveness record, then their ids move from the queue into RQ's
intermediate queue in one transaction that watches the queue (when another worker or the
backend changed it meanwhile, it looks again). The intermediate queue is where RQ's own dequeue
puts the job it hands out, so a worker that dies between the claim and the bookkeeping that
follows leaves the jobs where RQ's maintenance finds them, as it would the first one. The worker
then moves every claimed job into RQ's started state exactly as it does the first
(:mod:`zerolabel.queue.batch`).

A job with a strike (a run of it died with its worker) is never claimed: it runs alone when
dequeued, so when it stops its worker again the strike is its own and not its batch's, and only
that job is quarantined (:mod:`zerolabel.queue.runs`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.utils import as_text

from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import DiscoveryError
from zerolabel.queue.dispatch import JOB_FUNCTION
from zerolabel.queue.heartbeat import Heartbeat
from zerolabel.queue.runs import Runs

logger = logging.getLogger(__name__)


def foreign(job: Job, functions: Collection[str] = (JOB_FUNCTION,)) -> str | None:
    """Why a worker serving ``functions`` must not run this job; None when it may.

    A job is only data in Redis, and whoever reaches Redis can write one naming any importable
    function, a method of an object, or success/failure/stopped callbacks that RQ would import
    and call. A worker runs the functions it serves, with no object and no callbacks, and nothing
    else; this reads the job's names without importing any of them.
    """
    try:
        name, instance = job.func_name, job.instance
    except DeserializationError:
        return "its data does not parse"
    if name not in functions:
        return f"it names the function {name!r}, which this worker does not run"
    if instance is not None:
        return f"it names {name!r} as a method of an object"
    callbacks = [getattr(job, attribute, None) for attribute in _CALLBACK_NAMES]
    named = [callback for callback in callbacks if callback]
    if named:
        return f"it names callbacks ({', '.join(map(repr, named))}), which this worker does not run"
    return None


_CALLBACK_NAMES = ("_success_callback_name", "_failure_callback_name", "_stopped_callback_name")
"""Where RQ's job keeps the import paths of its callbacks (tests/unit/test_rq_api.py pins them)."""


def disarm(job: Job) -> None:
    """Forget, in this process, the callbacks a refused job names, so failing it calls none."""
    for attribute in _CALLBACK_NAMES:
        setattr(job, attribute, None)


def is_discovery(job: Job) -> bool:
    """Whether the job runs :data:`~zerolabel.queue.dispatch.JOB_FUNCTION` and nothing else."""
    return foreign(job) is None


def request_of(job: Job) -> DiscoveryRequest | None:
    """The request of a discovery job; None for other functions and requests that do not parse
    (those are answered alone, with their error)."""
    try:
        if not is_discovery(job) or len(job.args) != 1:
            return None
        argument: Any = job.args[0]
        return DiscoveryRequest.from_dict(argument)
    except (DiscoveryError, DeserializationError, LookupError, TypeError, ValueError):
        return None


class Claimer:
    """Takes waiting jobs of one spec off a queue for a batch.

    Args:
        runs: strikes (a job with a strike is not claimed).
        beat: the worker's liveness record, which holds the jobs from before the claim.
        window: how many waiting job ids, from the head of the queue, are looked at.
        attempts: transactions tried when others keep changing the queue meanwhile.
    """

    def __init__(self, runs: Runs, beat: Heartbeat, *, window: int, attempts: int = 5) -> None:
        self.runs = runs
        self.beat = beat
        self.window = window
        self.attempts = attempts

    def claim(
        self, queue: Queue, spec: DiscoverySpec, count: int, *, only_if_next: bool = False
    ) -> list[tuple[Job, DiscoveryRequest]]:
        """Up to ``count`` waiting jobs of ``spec``, moved to the intermediate queue, in order.

        Args:
            queue: the queue the worker serves (its job class is the worker's).
            spec: the batch's spec.
            count: the most jobs to take.
            only_if_next: take none unless the job at the head of the queue has this spec, so
                a run of batches never keeps another spec's job waiting at the head.
        """
        if count < 1:
            return []
        ids = [as_text(raw) for raw in queue.connection.lrange(queue.key, 0, self.window - 1)]
        jobs = queue.job_class.fetch_many(
            ids, connection=queue.connection, serializer=queue.serializer
        )
        requests = [request_of(job) if job is not None else None for job in jobs]
        if only_if_next and (not requests or requests[0] is None or requests[0].spec != spec):
            return []
        candidates = [
            (job, request)
            for job, request in zip(jobs, requests, strict=True)
            if job is not None and request is not None and request.spec == spec
            if job.get_status(refresh=False) == JobStatus.QUEUED
        ]
        struck = self.runs.struck([job.id for job, _ in candidates]) if candidates else []
        chosen = [pair for pair, strike in zip(candidates, struck, strict=True) if not strike]
        return self._take(queue, chosen[:count])

    def _take(
        self, queue: Queue, chosen: list[tuple[Job, DiscoveryRequest]]
    ) -> list[tuple[Job, DiscoveryRequest]]:
        """Move the chosen ids still waiting to the intermediate queue, all in one transaction.

        The jobs enter the liveness record first, so a Redis outage that leaves the outcome of
        the transaction unknown still finds them among the worker's unfinished jobs.
        """
        for _ in range(self.attempts):
            if not chosen:
                return []
            with queue.connection.pipeline() as pipe:
                try:
                    pipe.watch(queue.key)  # type: ignore[no-untyped-call]
                    waiting = {as_text(raw) for raw in pipe.lrange(queue.key, 0, self.window - 1)}
                    chosen = [(job, request) for job, request in chosen if job.id in waiting]
                    if not chosen:
                        return []
                    ids = [job.id for job, _request in chosen]
                    self.beat.hold(ids)
                    pipe.multi()
                    for job_id in ids:
                        pipe.lrem(queue.key, 1, job_id)
                        pipe.rpush(queue.intermediate_queue_key, job_id)
                    pipe.execute()
                    return chosen
                except WatchError:
                    self.beat.release(*(job.id for job, _request in chosen))
                    continue
        logger.debug("the queue kept changing; no jobs claimed for this batch")
        return []
