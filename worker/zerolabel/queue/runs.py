"""Runs that die with their worker: noticed in seconds, counted once, quarantined after two.

A run is one execution of a job; RQ's job hash names its worker (``worker_name``) and when it
began (``started_at``). What this adds to RQ:

- RQ finds a job whose worker died mid-run (an abandoned job) once the run's entry in its
  StartedJobRegistry has expired (the job timeout + 60 s for a worker that runs jobs in its own
  process) and some worker's maintenance (every 10 minutes) cleans the registry. Here a started
  job that its worker's liveness record (:mod:`zerolabel.queue.heartbeat`) does not hold has
  lost its worker as soon as the record lapses (seconds), and the backend queues it again when
  it is asked for (:meth:`~zerolabel.queue.dispatch.Dispatcher.submit`). The jobs nobody asks
  for again are left to RQ's own cleanup, which retries them or fails them; its deaths are
  counted here too (:func:`~zerolabel.queue.failures.strike_abandoned`).
- RQ's retries count deaths and errors alike. Each dead run is a strike, kept in
  ``zerolabel:strikes:<job id>`` (the set of dead runs, so a run is counted once whoever notices
  it). A job with a strike runs alone, never in a batch; after :data:`QUARANTINE_AFTER` strikes
  it fails with :data:`QUARANTINE_REASON` instead of running again (delete the key to allow it
  once more).

Every record lapses while Redis restarts: a run that began before a start of Redis less than
:data:`RESTART_GRACE_S` seconds ago is not taken for dead (its worker is reconnecting, and
queues again itself what the outage cut short).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure

from zerolabel.errors import QuarantinedJobError
from zerolabel.queue.heartbeat import beat_of

logger = logging.getLogger(__name__)

QUARANTINE_AFTER = 2
RESTART_GRACE_S = 15
"""After Redis starts, how long a lapsed record is not yet taken for a dead worker."""
QUARANTINE_REASON = "quarantined: the job stopped its worker twice (killed or out of memory)"


def _strikes_key(job_id: str) -> str:
    return f"zerolabel:strikes:{job_id}"


def run_of(job: Job) -> str:
    """The run a started job is in: its worker's name and when the run began."""
    began = job.started_at.isoformat() if job.started_at else "?"
    return f"{job.worker_name} {began}"


class Runs:
    """Whether runs are alive, and the strikes of the jobs whose runs died.

    Args:
        redis: the connection.
        ttl_s: how long strikes are kept (the result TTL).
    """

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def alive(self, job: Job) -> bool:
        """Whether the run of a started job still has its worker (or may: Redis restarted)."""
        beat = beat_of(self.redis, job.worker_name) if job.worker_name else None
        if beat is not None and job.id in beat.jobs:
            return True
        return self._outage_may_explain(job)

    def settle(self, job: Job) -> int:
        """Count the run of a started job as a strike if its worker died; the job's strikes."""
        if job.get_status(refresh=False) == JobStatus.STARTED and not self.alive(job):
            return self.strike(job)
        return self.strikes(job.id)

    def strike(self, job: Job) -> int:
        """Count the job's run, which died with its worker (once per run); the strikes."""
        key = _strikes_key(job.id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, run_of(job))
            pipe.expire(key, self.ttl_s)
            pipe.scard(key)
            added, _, strikes = pipe.execute()
        if added:
            logger.warning("job %s stopped its worker (killed or out of memory)", job.id)
        return int(strikes)

    def strikes(self, job_id: str) -> int:
        return int(self.redis.scard(_strikes_key(job_id)))

    def struck(self, job_ids: Sequence[str]) -> list[bool]:
        """Whether each job has a strike, read in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(_strikes_key(job_id))
            return [bool(found) for found in pipe.execute()]

    def quarantined(self, job_id: str) -> bool:
        return self.strikes(job_id) >= QUARANTINE_AFTER

    def check(self, job_id: str) -> None:
        """Raises QuarantinedJobError when the job stopped its worker too often to run again."""
        if self.quarantined(job_id):
            raise QuarantinedJobError(QUARANTINE_REASON)

    def _outage_may_explain(self, job: Job) -> bool:
        """Whether the run began before Redis last started, and that start was moments ago."""
        try:
            uptime = self.redis.info("server").get("uptime_in_seconds")
        except ResponseError:  # INFO not offered (a proxy, a test double)
            return False
        if uptime is None or int(uptime) >= RESTART_GRACE_S:
            return False
        seconds, micros = self.redis.time()
        began = job.started_at.timestamp() if job.started_at else 0.0
        return began < float(seconds) + micros / 1e6 - int(uptime)


def quarantine(job: Job) -> None:
    """Fail ``job`` with :data:`QUARANTINE_REASON` without running it again."""
    logger.error("job %s: %s", job.id, QUARANTINE_REASON)
    with job.connection.pipeline() as pipe:
        record_job_failure(job, QUARANTINE_REASON, pipe)
        if job.origin:  # should anything have queued it again meanwhile
            Queue(job.origin, connection=job.connection).remove(job.id, pipeline=pipe)
        pipe.execute()
