"""The backend's side of the queue: connections, submitting idempotent jobs, collecting results.

Imported by the backend (which must not import torch) and by workers. Jobs are enqueued by
string reference (:data:`JOB_FUNCTION`) with RQ's JSON serializer, so the backend never imports
the worker's code. What it adds to RQ: one job per image and spec (the job id is the request's),
reused while it is queued, running or finished, and replaced when it failed or its worker died
(:mod:`zerolabel.queue.runs`, noticed in seconds rather than at RQ's next maintenance); the wait
for many jobs reads their statuses in one round trip per look; health counts the workers whose
liveness record (:mod:`zerolabel.queue.heartbeat`) is alive, not RQ's registrations, which
outlive a killed worker by minutes.

Keys (besides RQ's own, ``rq:job:<job id>`` with job id = ``request.job_id``):
  zerolabel:worker:<name>              a live worker's record: its process and the jobs it holds
  zerolabel:strikes:<job id>           the runs of that job that died with their worker
  zerolabel:result:<version>:<origin digest>:<sha256>
                                       a finished result by model_version, image origin and content
  zerolabel:waiting:... zerolabel:finished:... zerolabel:delivered:... zerolabel:writeback:due
                                       late predictions (:mod:`zerolabel.queue.writeback`)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
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
from zerolabel.queue.runs import QUARANTINE_AFTER, Runs, quarantine
from zerolabel.settings import QueueSettings

__all__ = [
    "JOB_FUNCTION",
    "PROMPT_FUNCTION",
    "LATE",
    "Dispatcher",
    "Ending",
    "Outcome",
    "ResultCache",
    "connect",
    "interactive_queue_name",
    "make_queue",
]

logger = logging.getLogger(__name__)

JOB_FUNCTION = "zerolabel.queue.jobs.discover"
PROMPT_FUNCTION = "zerolabel.queue.jobs.prompt"
"""The function interactive prompts are enqueued under (:mod:`zerolabel.queue.interactive`)."""
_WAITING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}


def connect(settings: QueueSettings) -> Redis:
    """A Redis client that fails fast when the server is down; ``REDIS_PASSWORD`` is its
    password unless the URL carries one."""
    password = {"password": settings.redis_password} if settings.redis_password else {}
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=30,
        **password,
    )


def make_queue(redis: Redis, settings: QueueSettings) -> Queue:
    return Queue(settings.queue, connection=redis, serializer=JSONSerializer)


INTERACTIVE_SUFFIX = "-interactive"


def interactive_queue_name(settings: QueueSettings) -> str:
    """The queue of interactive prompts, which every worker of ``settings.queue`` serves first."""
    return settings.queue + INTERACTIVE_SUFFIX


class Ending(Enum):
    """How the wait for a job ended."""

    DONE = "done"
    """The job finished: its result (which may hold the error of its image)."""
    LATE = "late"
    """The job was still queued or running: it ends later."""
    FAILED = "failed"
    """RQ failed, stopped or canceled the job, or it finished without a result."""
    UNREACHABLE = "unreachable"
    """Redis did not answer."""


@dataclass(frozen=True)
class Outcome:
    """What became of one request: a result, or why there is none yet.

    Attributes:
        result: the job's result; None when there is none now.
        reason: why there is none, in words (e.g. "failed: ValueError: ...").
        ending: how the wait ended. Not compared: two outcomes with the same result and reason
            are the same outcome.
    """

    result: DiscoveryResult | None
    reason: str | None = None
    ending: Ending = field(default=Ending.DONE, compare=False)


LATE = Outcome(None, "late: still running, ask again", Ending.LATE)
"""The outcome of a job that had not ended when the wait did."""


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

        A failed job, or a started job whose worker's liveness record no longer holds it
        (killed mid-job), is replaced, so asking again recovers the task; a job that stopped its
        worker twice is failed instead (quarantined) and stays failed.
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
            ttl=self.settings.result_ttl_s,  # a job still queued after the retention is dropped
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
        if self.runs.alive(job):
            return True
        if self.runs.strike(job) >= QUARANTINE_AFTER:
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
        return [outcomes.get(i, LATE) for i in range(len(jobs))]

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
                return Outcome(None, "no result", Ending.FAILED)
            result = DiscoveryResult.from_dict(value)
            if result.error:  # e.g. a 404: forget it, so the task is tried again next time
                with contextlib.suppress(RedisError):
                    job.delete()
            return Outcome(result)
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return Outcome(None, f"{status.value}: {_last_line(job)}", Ending.FAILED)
        return None

    def health(self) -> dict[str, Any]:
        """Redis reachability, queue depth and live workers (never raises).

        ``workers`` counts worker processes whose liveness record is alive, not RQ's
        registrations (which outlive a killed worker by minutes).
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
