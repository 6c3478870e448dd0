"""Leases, run records, and the quarantine of jobs that keep killing their workers.

Keys:
  zerolabel:lease:<job id>    held and renewed by the job while it runs (TTL ``lease_s``)
  zerolabel:run:<job id>      the worker process running the job now; deleted when the run ends
  zerolabel:strikes:<job id>  how many runs of the job ended with their worker process dead

A run whose record outlives its worker's heartbeat died with its worker (killed, out of
memory), unless the run began before Redis last started and that start was less than
:data:`RESTART_GRACE_S` seconds ago: every heartbeat lapsed during the outage and live workers
are still reconnecting (they queue again what the outage cut short themselves). Whoever notices
a dead run first (the backend asking again, or a worker picking the job up once more) deletes
its record and counts a strike, exactly once per run. After :data:`QUARANTINE_AFTER` strikes the
job is failed with :data:`QUARANTINE_REASON` instead of being run again; delete its strikes key
to allow it once more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError, ResponseError, WatchError
from rq import Queue
from rq.job import Job
from rq.job_lifecycle import record_job_failure

from zerolabel.errors import DiscoveryError
from zerolabel.queue.heartbeat import is_alive

logger = logging.getLogger(__name__)

QUARANTINE_AFTER = 2
RESTART_GRACE_S = 15
"""After Redis starts, how long a missing heartbeat is not yet taken for a dead worker."""
QUARANTINE_REASON = "quarantined: the job stopped its worker twice (killed or out of memory)"


class QuarantinedJobError(DiscoveryError):
    """The job stopped its worker too often to be run again."""


def lease_key(job_id: str) -> str:
    return f"zerolabel:lease:{job_id}"


def _run_key(job_id: str) -> str:
    return f"zerolabel:run:{job_id}"


def _strikes_key(job_id: str) -> str:
    return f"zerolabel:strikes:{job_id}"


@contextlib.contextmanager
def lease(redis: Redis, job_id: str | None, lease_s: int) -> Iterator[None]:
    """Hold ``zerolabel:lease:<job_id>`` while the block runs, renewed by a daemon thread.

    When the worker dies the key expires within ``lease_s`` and the backend re-queues the job.
    Renewal failures (Redis away) are ignored; renewal resumes when Redis is back.
    """
    if job_id is None:  # run outside RQ (CLI, tests)
        yield
        return
    key = lease_key(job_id)
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


@dataclass(frozen=True)
class RunRecord:
    """Which worker process runs a job."""

    worker: str
    instance: str
    since: float = field(default=0.0, compare=False)  # Redis server time when the run began

    def dumps(self) -> str:
        return json.dumps({"worker": self.worker, "instance": self.instance, "since": self.since})

    @classmethod
    def loads(cls, raw: bytes | str) -> RunRecord | None:
        try:
            data = json.loads(raw)
            return cls(str(data["worker"]), str(data["instance"]), float(data.get("since", 0)))
        except (ValueError, KeyError, TypeError):
            return None


class Runs:
    """Run records and strikes of jobs.

    Args:
        redis: the connection.
        ttl_s: how long run records and strikes are kept (the result TTL).
    """

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def begin(self, job_id: str, record: RunRecord) -> None:
        """Record a run of ``job_id`` starting, after settling the previous one.

        Raises:
            QuarantinedJobError: the job has stopped its worker too often to run again.
        """
        self.settle(job_id)
        if self.strikes(job_id) >= QUARANTINE_AFTER:
            raise QuarantinedJobError(QUARANTINE_REASON)
        began = dataclasses.replace(record, since=self._server_time())
        self.redis.set(_run_key(job_id), began.dumps(), ex=self.ttl_s)

    def end(self, job_id: str, record: RunRecord) -> None:
        """Forget the run of ``job_id`` that ``record`` describes (not a later one)."""
        self._drop(job_id, lambda seen: seen == record, count=False)

    def settle(self, job_id: str) -> int:
        """Count the recorded run of ``job_id`` as a strike if its worker died; the strikes."""
        if self._drop(job_id, self._dead, count=True):
            logger.warning("job %s stopped its worker (killed or out of memory)", job_id)
        return self.strikes(job_id)

    def strikes(self, job_id: str) -> int:
        raw = self.redis.get(_strikes_key(job_id))
        return int(raw) if raw else 0

    def quarantined(self, job_id: str) -> bool:
        return self.strikes(job_id) >= QUARANTINE_AFTER

    def running(self, job_id: str) -> bool:
        """Whether a worker process runs ``job_id`` now (or may: Redis has just restarted)."""
        raw = self.redis.get(_run_key(job_id))
        record = RunRecord.loads(raw) if raw else None
        return record is not None and not self._dead(record)

    def _dead(self, record: RunRecord) -> bool:
        if is_alive(self.redis, record.worker, record.instance):
            return False
        return not self._outage_may_explain(record)

    def _outage_may_explain(self, record: RunRecord) -> bool:
        """Whether the run began before Redis last started, and that start was moments ago."""
        try:
            uptime = self.redis.info("server").get("uptime_in_seconds")
        except ResponseError:  # INFO not offered (a proxy, a test double)
            return False
        if uptime is None or int(uptime) >= RESTART_GRACE_S:
            return False
        return record.since < self._server_time() - int(uptime)

    def _server_time(self) -> float:
        seconds, micros = self.redis.time()
        return float(seconds) + micros / 1e6

    def _drop(self, job_id: str, matches: Callable[[RunRecord], bool], *, count: bool) -> bool:
        """Delete the run record when ``matches`` accepts it, counting a strike if asked.

        A record replaced meanwhile (another worker started a run) is left alone.
        """
        key = _run_key(job_id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                raw = pipe.get(key)
                record = RunRecord.loads(raw) if raw else None
                if record is None or not matches(record):
                    return False
                pipe.multi()
                pipe.delete(key)
                if count:
                    pipe.incr(_strikes_key(job_id))
                    pipe.expire(_strikes_key(job_id), self.ttl_s)
                pipe.execute()
                return True
            except WatchError:
                return False


def quarantine(job: Job) -> None:
    """Fail ``job`` with :data:`QUARANTINE_REASON` without running it again."""
    logger.error("job %s: %s", job.id, QUARANTINE_REASON)
    with job.connection.pipeline() as pipe:
        record_job_failure(job, QUARANTINE_REASON, pipe)
        if job.origin:  # should anything have queued it again meanwhile
            Queue(job.origin, connection=job.connection).remove(job.id, pipeline=pipe)
        pipe.execute()
