"""Which waiting jobs join a worker's batch, and taking them off the queue.

RQ's dequeue hands a worker one job. A worker that batches then looks at the first ``window``
job ids waiting in the same queue and picks the discovery jobs whose request names the same
spec; jobs of other specs, and jobs of other functions, stay where they are. It moves the
picked ids from the queue into RQ's intermediate queue in one transaction that watches the
queue (when another worker or the backend changed it meanwhile, it looks again). The
intermediate queue is where RQ's own dequeue (LMOVE) puts the job it hands out, so a worker
that dies between the claim and the bookkeeping that follows leaves the jobs where RQ's
maintenance finds them, as it would the first one. The worker then moves every claimed job
into RQ's started state exactly as it does the first (:mod:`zerolabel.queue.batch`).

A job with a strike (a run of it died with its worker) is never claimed: it runs alone when
dequeued, so when it stops its worker again the strike is its own and not its batch's, and only
that job is quarantined (:mod:`zerolabel.queue.leases`).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import WatchError
from rq import Queue
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.utils import as_text

from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import DiscoveryError
from zerolabel.queue.dispatch import JOB_FUNCTION
from zerolabel.queue.leases import Runs

logger = logging.getLogger(__name__)


def request_of(job: Job) -> DiscoveryRequest | None:
    """The request of a discovery job; None for other functions and requests that do not parse
    (those run alone, where ``discover`` answers them with their error)."""
    try:
        if job.func_name != JOB_FUNCTION or len(job.args) != 1:
            return None
        argument: Any = job.args[0]
        return DiscoveryRequest.from_dict(argument)
    except (DiscoveryError, DeserializationError, LookupError, TypeError, ValueError):
        return None


class Claimer:
    """Takes waiting jobs of one spec off a queue for a batch.

    Args:
        runs: run records and strikes (a job with a strike is not claimed).
        window: how many waiting job ids, from the head of the queue, are looked at.
        attempts: transactions tried when others keep changing the queue meanwhile.
    """

    def __init__(self, runs: Runs, *, window: int, attempts: int = 5) -> None:
        self.runs = runs
        self.window = window
        self.attempts = attempts

    def claim(
        self,
        queue: Queue,
        spec: DiscoverySpec,
        count: int,
        *,
        taken: set[str],
        only_if_next: bool = False,
    ) -> list[tuple[Job, DiscoveryRequest]]:
        """Up to ``count`` waiting jobs of ``spec``, moved to the intermediate queue, in order.

        Args:
            queue: the queue the worker serves.
            spec: the batch's spec.
            count: the most jobs to take.
            taken: the worker's jobs not finished yet; the ids are added before the transaction
                is sent, so a Redis outage that leaves its outcome unknown still finds them.
            only_if_next: take none unless the job at the head of the queue has this spec, so
                a run of batches never keeps another spec's job waiting at the head.
        """
        if count < 1:
            return []
        ids = [as_text(raw) for raw in queue.connection.lrange(queue.key, 0, self.window - 1)]
        jobs = Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer)
        requests = [request_of(job) if job is not None else None for job in jobs]
        if only_if_next and (not requests or requests[0] is None or requests[0].spec != spec):
            return []
        chosen: list[tuple[Job, DiscoveryRequest]] = []
        for job, request in zip(jobs, requests, strict=True):
            if len(chosen) == count:
                break
            if job is None or request is None or request.spec != spec:
                continue
            if job.get_status(refresh=False) == JobStatus.QUEUED and not self.runs.settle(job.id):
                chosen.append((job, request))
        return self._take(queue, chosen, taken)

    def _take(
        self, queue: Queue, chosen: list[tuple[Job, DiscoveryRequest]], taken: set[str]
    ) -> list[tuple[Job, DiscoveryRequest]]:
        """Move the chosen ids still waiting to the intermediate queue, all in one transaction."""
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
                    taken.update(job.id for job, _request in chosen)
                    pipe.multi()
                    for job, _request in chosen:
                        pipe.lrem(queue.key, 1, job.id)
                        pipe.rpush(queue.intermediate_queue_key, job.id)
                    pipe.execute()
                    return chosen
                except WatchError:
                    continue
        logger.debug("the queue kept changing; no jobs claimed for this batch")
        return []
