"""Everything that knows Redis and RQ: the queue, idempotent jobs, leases, the result cache.

Imported by the backend (which must not import torch) and by workers. Jobs are enqueued by
string reference (``zerolabel.queue.jobs.discover``) with RQ's JSON serializer, so the backend never
imports the worker's code.

Keys:
  rq:job:<job id>                      RQ's own job hash (job id = request.job_id)
  zerolabel:lease:<job id>             held and renewed by the worker running that job
  zerolabel:result:<version>:<origin digest>:<sha256>
                                       a finished result by model_version, the origin the
                                       image came from and its content
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from zerolabel.contract import DiscoveryRequest, DiscoveryResult
from zerolabel.settings import QueueSettings

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


def _lease_key(job_id: str) -> str:
    return f"zerolabel:lease:{job_id}"


def _result_key(model_version: str, origin: str, sha256: str) -> str:
    digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return f"zerolabel:result:{model_version}:{digest}:{sha256}"


# --- backend side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one request: a result, or why there is none yet."""

    result: DiscoveryResult | None
    reason: str | None = None  # "late", "failed: ...", "redis unreachable: ..."


class Dispatcher:
    """Turns requests into RQ jobs (one job per image URL and spec) and collects results."""

    def __init__(self, redis: Redis, settings: QueueSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.queue = make_queue(redis, settings)

    def submit(self, request: DiscoveryRequest) -> Job:
        """The job for this request: the existing one when it is done or alive, else a new one.

        A failed job, or a started job whose worker no longer renews its lease (killed
        mid-job), is replaced, so asking again recovers the task.
        """
        job = self._existing(request.job_id)
        if job is not None and self._usable(job):
            return job
        if job is not None:
            job.delete()
        return self.queue.enqueue(
            JOB_FUNCTION,
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
            if self.redis.exists(_lease_key(job.id)):
                return True
            started = job.started_at.timestamp() if job.started_at else 0.0
            if time.time() - started < self.settings.lease_s:
                return True  # the worker is taking the lease right now
            logger.warning("job %s lost its worker mid-run; queueing it again", job.id)
        return False

    def collect(self, jobs: Sequence[Job], timeout_s: float, poll_s: float = 0.05) -> list[Outcome]:
        """Wait until every job has ended or ``timeout_s`` has passed; one outcome per job."""
        deadline = time.monotonic() + timeout_s
        outcomes: dict[int, Outcome] = {}
        while True:
            for index, job in enumerate(jobs):
                if index not in outcomes:
                    outcome = self._outcome(job)
                    if outcome is not None:
                        outcomes[index] = outcome
            if len(outcomes) == len(jobs) or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
        return [
            outcomes.get(i, Outcome(None, "late: still running, ask again"))
            for i in range(len(jobs))
        ]

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
        """Redis reachability, queue depth and live workers (never raises)."""
        try:
            self.redis.ping()
            workers = SimpleWorker.all(queue=self.queue)
            return {
                "reachable": True,
                "queue": self.settings.queue,
                "queue_depth": self.queue.count,
                "workers": len(workers),
            }
        except (RedisError, OSError) as exc:
            return {"reachable": False, "queue": self.settings.queue, "error": _describe(exc)}


def _last_line(job: Job) -> str:
    info = job.latest_result()
    text = (info.exc_string if info and info.exc_string else "") or "unknown error"
    return text.strip().splitlines()[-1][:500]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# --- worker side -------------------------------------------------------------------------------


@contextlib.contextmanager
def lease(redis: Redis, job_id: str | None, lease_s: int) -> Iterator[None]:
    """Hold ``zerolabel:lease:<job_id>`` while the block runs, renewed by a daemon thread.

    When the worker dies the key expires within ``lease_s`` and the backend re-queues the job.
    """
    if job_id is None:  # run outside RQ (CLI, tests)
        yield
        return
    key = _lease_key(job_id)
    stop = threading.Event()
    redis.set(key, os.getpid(), ex=lease_s)

    def renew() -> None:
        while not stop.wait(lease_s / 3):
            with contextlib.suppress(RedisError):
                redis.set(key, os.getpid(), ex=lease_s)

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(RedisError):
            redis.delete(key)


class ResultCache:
    """Finished results by model_version, image origin and image content hash.

    ``origin`` names where the image came from (``scheme://host:port``, or ``local``); a result
    computed from one origin is never returned for another. Keys hold only its digest.
    """

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def get(self, model_version: str, origin: str, sha256: str) -> DiscoveryResult | None:
        raw = self.redis.get(_result_key(model_version, origin, sha256))
        return DiscoveryResult.from_dict(json.loads(raw)) if raw else None

    def put(self, result: DiscoveryResult, origin: str, sha256: str) -> None:
        key = _result_key(result.model_version, origin, sha256)
        self.redis.set(key, json.dumps(result.to_dict()), ex=self.ttl_s)


def run_worker(
    redis: Redis, settings: QueueSettings, name: str | None = None, burst: bool = False
) -> None:
    """Serve jobs in this process until stopped (SimpleWorker: the model stays loaded)."""
    worker = SimpleWorker(
        [make_queue(redis, settings)], connection=redis, serializer=JSONSerializer, name=name
    )
    worker.work(burst=burst, with_scheduler=True)
