"""The backend's side of the queue: connections, submitting idempotent jobs, collecting results.

Imported by the backend (which must not import torch) and by workers. Jobs are enqueued by
string reference (``zerolabel.queue.jobs.discover``) with RQ's JSON serializer, so the backend never
imports the worker's code. The worker side lives in :mod:`zerolabel.queue.worker`; leases, run
records and the quarantine in :mod:`zerolabel.queue.leases`; heartbeats in
:mod:`zerolabel.queue.heartbeat`; the result cache in :mod:`zerolabel.queue.cache`.

Keys:
  rq:job:<job id>                      RQ's own job hash (job id = request.job_id)
  zerolabel:lease:<job id>             held and renewed by the worker running that job
  zerolabel:run:<job id>               the worker process running that job
  zerolabel:strikes:<job id>           runs of that job that died with their worker
  zerolabel:worker:<name>              a live worker's heartbeat
  zerolabel:result:<version>:<origin digest>:<sha256>
                                       a finished result by model_version, image origin and content
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from zerolabel.contract import DiscoveryRequest, DiscoveryResult
from zerolabel.queue.cache import ResultCache
from zerolabel.queue.heartbeat import live_workers
from zerolabel.queue.leases import QUARANTINE_AFTER, Runs, lease, lease_key, quarantine
from zerolabel.settings import QueueSettings

__all__ = [
    "JOB_FUNCTION",
    "Dispatcher",
    "Outcome",
    "ResultCache",
    "connect",
    "lease",
    "make_queue",
]

logger = logging.getLogger(__name__)

JOB_FUNCTION = "zerolabel.queue.jobs.discover"
_WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def connect(settings: QueueSettings) -> Redis:
    """A Redis client that fails fast when the server is down."""
    return Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=10, health_check_interval=30
    )


def make_queue(redis: Redis, settings: QueueSettings) -> Queue:
    return Queue(settings.queue, connection=redis, serializer=JSONSerializer)


# --- backend side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one request: a result, or why there is none yet."""

    result: DiscoveryResult | None
    reason: str | None = None  # "late", "failed: ...", "redis unreachable: ..."


class Dispatcher:
    """Turns requests into RQ jobs (one job per image URL and spec) and collects results.

    Attributes:
        job_function: what the jobs run, by import path (tests enqueue functions of their own).
    """

    job_function: str = JOB_FUNCTION

    def __init__(self, redis: Redis, settings: QueueSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.queue = make_queue(redis, settings)
        self.runs = Runs(redis, settings.result_ttl_s)

    def submit(self, request: DiscoveryRequest) -> Job:
        """The job for this request: the existing one when it is done or alive, else a new one.

        A failed job, or a started job whose worker no longer renews its lease (killed
        mid-job), is replaced, so asking again recovers the task; a job that stopped its worker
        twice is failed instead (quarantined) and stays failed.
        """
        job = self._existing(request.job_id)
        if job is not None and self._usable(job):
            return job
        if job is not None:
            job.delete()
        return self.queue.enqueue(
            self.job_function,
            request.to_dict(),
            job_id=request.job_id,
            description=f"discover task {request.task_id} ({request.spec.model_version()})",
            job_timeout=self.settings.job_timeout_s,
            result_ttl=self.settings.result_ttl_s,
            failure_ttl=self.settings.result_ttl_s,
            retry=Retry(max=self.settings.retries, interval=[2, 10])
            if self.settings.retries
            else None,
        )

    def _existing(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    def _usable(self, job: Job) -> bool:
        status = job.get_status(refresh=False)
        if status == JobStatus.FINISHED or status in _WAITING:
            return True
        if status == JobStatus.STARTED:
            return self._still_running(job)
        if status == JobStatus.FAILED:
            return self.runs.quarantined(job.id)  # keep answering with the quarantine
        return False

    def _still_running(self, job: Job) -> bool:
        """Whether a started job still has its worker; if not, strike it and maybe quarantine it.

        Returns:
            True to keep the job (running, or failed by the quarantine just now), False to run it
            again.
        """
        if self.redis.exists(lease_key(job.id)) or self.runs.running(job.id):
            return True
        started = job.started_at.timestamp() if job.started_at else 0.0
        if time.time() - started < self.settings.lease_s:
            return True  # the worker is taking the lease right now
        if self.runs.settle(job.id) >= QUARANTINE_AFTER:
            quarantine(job)
            return True
        logger.warning("job %s lost its worker mid-run; queueing it again", job.id)
        return False

    def collect(
        self, jobs: Sequence[Job], timeout_s: float, poll_s: float = 0.02, max_poll_s: float = 0.2
    ) -> list[Outcome]:
        """Wait until every job has ended or ``timeout_s`` has passed; one outcome per job.

        Each look reads the status of every job still pending in one Redis round trip (a
        ``/predict`` waiting for many jobs costs Redis and this process little while workers
        run them); the pause between looks grows from ``poll_s`` to ``max_poll_s``.
        """
        deadline = time.monotonic() + timeout_s
        outcomes: dict[int, Outcome] = {}
        pause = poll_s
        while True:
            pending = [index for index in range(len(jobs)) if index not in outcomes]
            statuses = self._statuses([jobs[index] for index in pending])
            for index, status in zip(pending, statuses, strict=True):
                if status in _ENDED:
                    outcome = self._outcome(jobs[index])
                    if outcome is not None:
                        outcomes[index] = outcome
            left = deadline - time.monotonic()
            if len(outcomes) == len(jobs) or left <= 0:
                break
            time.sleep(min(pause, left))
            pause = min(pause * 1.5, max_poll_s)
        return [
            outcomes.get(i, Outcome(None, "late: still running, ask again"))
            for i in range(len(jobs))
        ]

    def _statuses(self, jobs: Sequence[Job]) -> list[str | None]:
        """The jobs' RQ statuses as stored, read in one round trip (None: no such job)."""
        if not jobs:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hget(job.key, "status")
            replies = pipe.execute()
        return [reply.decode() if isinstance(reply, bytes) else reply for reply in replies]

    def _outcome(self, job: Job) -> Outcome | None:
        status = job.get_status(refresh=True)
        if status == JobStatus.FINISHED:
            value = job.return_value(refresh=True)
            if not value:
                return Outcome(None, "no result")
            result = DiscoveryResult.from_dict(value)
            if result.error:  # e.g. a 404: forget it, so the task is tried again next time
                with contextlib.suppress(RedisError):
                    job.delete()
            return Outcome(result)
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return Outcome(None, f"{status.value}: {_last_line(job)}")
        return None

    def health(self) -> dict[str, Any]:
        """Redis reachability, queue depth and live workers (never raises).

        ``workers`` counts worker processes whose heartbeat is alive, not RQ's registrations
        (which outlive a killed worker by minutes).
        """
        try:
            self.redis.ping()
            workers = live_workers(self.redis, self.settings.queue)
            return {
                "reachable": True,
                "queue": self.settings.queue,
                "queue_depth": self.queue.count,
                "workers": len(workers),
            }
        except (RedisError, OSError) as exc:
            return {"reachable": False, "queue": self.settings.queue, "error": _describe(exc)}


_ENDED = {
    status.value
    for status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
}


def _last_line(job: Job) -> str:
    info = job.latest_result()
    text = (info.exc_string if info and info.exc_string else "") or "unknown error"
    return text.strip().splitlines()[-1][:500]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
