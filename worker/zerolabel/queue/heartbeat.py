"""One liveness record per worker process: which workers are alive, and the jobs each holds.

What it adds to RQ: RQ keeps a worker's registration (``rq:worker:<name>``) for minutes after
its last heartbeat, a worker that runs jobs in its own process sends none while a job runs, and
a worker restarted under the same name cannot be told from the one that died. Here each worker
process holds ``zerolabel:worker:<name>``, renewed from a daemon thread every quarter of
:func:`heartbeat_ttl` (also while a job runs, and while Redis is away: renewal resumes when it is
back). The record names the process (a random instance id) and every job it holds: claimed into
a batch, downloading, running or being finished. A job enters the record before RQ marks it
started.

One record, two deadlines, both read from the key's remaining TTL (Redis's clock, never the
machines'): the worker is alive (``/health``, its name taken) while the record was renewed
within its heartbeat TTL, a few seconds; its jobs are alive while the key exists, up to
``ZEROLABEL_LEASE_S`` after the last renewal, so a worker that stalls a few seconds does not
lose its jobs. A started job that no record holds has lost its worker
(:mod:`zerolabel.queue.runs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError, WatchError

from zerolabel.errors import WorkerNameInUse

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_S = 5
"""How long a worker counts as alive after its record's last renewal (less with a shorter
lease)."""

_PREFIX = "zerolabel:worker:"


def heartbeat_key(name: str) -> str:
    return f"{_PREFIX}{name}"


def heartbeat_ttl(lease_s: int) -> int:
    """A worker counts as dead no later than its jobs do."""
    return max(1, min(HEARTBEAT_TTL_S, lease_s))


@dataclass(frozen=True)
class Beat:
    """What a worker's record says about its process.

    Attributes:
        name: the RQ worker name.
        queue: the queue it serves.
        instance: a random id of the process, told apart from another under the same name.
        pid: its process id, on ``host``.
        host: the machine.
        jobs: the ids of the jobs it holds.
        ttl_s: the worker counts as alive this long after a renewal.
        lease_s: its jobs count as alive this long after a renewal (the key's TTL).
    """

    name: str
    queue: str
    instance: str
    pid: int
    host: str
    jobs: tuple[str, ...] = ()
    ttl_s: int = HEARTBEAT_TTL_S
    lease_s: int = HEARTBEAT_TTL_S

    def dumps(self) -> str:
        fields = {"queue": self.queue, "instance": self.instance, "pid": self.pid}
        times = {"ttl_s": self.ttl_s, "lease_s": self.lease_s}
        return json.dumps({**fields, "host": self.host, "jobs": list(self.jobs), **times})

    @classmethod
    def loads(cls, name: str, raw: bytes | str) -> Beat | None:
        """The record stored under ``name``, or None when the value is not one."""
        try:
            data: dict[str, Any] = json.loads(raw)
            jobs = tuple(str(job) for job in data.get("jobs") or ())
            queue, instance, host = str(data["queue"]), str(data["instance"]), str(data["host"])
            ttl_s = int(data.get("ttl_s", HEARTBEAT_TTL_S))
            lease_s = int(data.get("lease_s", ttl_s))
            return cls(name, queue, instance, int(data["pid"]), host, jobs, ttl_s, lease_s)
        except (ValueError, KeyError, TypeError):
            return None

    def renewed_within_ttl(self, left_ms: int) -> bool:
        """Whether the worker is alive, given the key's remaining TTL (Redis ``PTTL``)."""
        return left_ms < 0 or self.lease_s * 1000 - left_ms < self.ttl_s * 1000


class Heartbeat:
    """Claims a worker name and keeps its record alive from a daemon thread.

    Use as a context manager: entering claims the name (waiting up to one TTL for the record of
    a dead process with the same name to go stale), leaving stops the thread and deletes the key.

    Args:
        redis: the worker's connection.
        name: the RQ worker name.
        queue: the queue the worker serves (reported by health).
        ttl_s: the heartbeat TTL; the record is renewed four times per TTL.
        lease_s: how long the jobs it holds outlive a last renewal (``ZEROLABEL_LEASE_S``);
            default ``ttl_s``.
    """

    def __init__(
        self, redis: Redis, name: str, queue: str, ttl_s: int, lease_s: int | None = None
    ) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.instance = uuid.uuid4().hex
        lease = max(ttl_s, lease_s or ttl_s)
        host = socket.gethostname()
        self._beat = Beat(name, queue, self.instance, os.getpid(), host, (), ttl_s, lease)
        self._jobs: dict[str, None] = {}  # held job ids, in the order they were taken
        self._lock = threading.Lock()  # one write at a time, of the latest job list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key = heartbeat_key(name)

    @property
    def name(self) -> str:
        return self._beat.name

    @property
    def held(self) -> list[str]:
        """The ids of the jobs held now, oldest first (a copy)."""
        with self._lock:
            return list(self._jobs)

    def hold(self, job_ids: Iterable[str]) -> None:
        """Add jobs to the record and write it now, before RQ marks any of them started.

        Raises:
            redis.exceptions.RedisError: Redis is away; the jobs stay held, so the worker finds
                them among its unfinished ones once it is back.
        """
        with self._lock:
            self._jobs.update(dict.fromkeys(job_ids))
            self._write()

    def release(self, *job_ids: str) -> None:
        """Drop jobs from the record and write it now (at the next renewal while Redis is away)."""
        with self._lock:
            held = [job_id for job_id in job_ids if job_id in self._jobs]
            for job_id in held:
                del self._jobs[job_id]
            if held:
                with contextlib.suppress(RedisError):
                    self._write()

    def __enter__(self) -> Heartbeat:
        self.claim()
        self._thread = threading.Thread(target=self._renew, name="zerolabel-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(RedisError):
            if self._owned():
                self.redis.delete(self._key)

    def claim(self, poll_s: float = 0.2) -> None:
        """Take the name; a record renewed within one TTL belongs to a live worker.

        Raises:
            WorkerNameInUse: another live process keeps the record of this name alive.
        """
        deadline = time.monotonic() + self.ttl_s + 1
        while not (self._write(nx=True) or self._take_over_stale()):
            if time.monotonic() >= deadline:
                raise WorkerNameInUse(
                    f"a live worker named {self.name!r} already serves this Redis; "
                    "give this one another --name"
                )
            time.sleep(poll_s)

    def _take_over_stale(self) -> bool:
        """Replace a record its process no longer renews (it died); False if it is alive."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(self._key)  # type: ignore[no-untyped-call]
                raw, left_ms = pipe.get(self._key), pipe.pttl(self._key)
                beat = Beat.loads(self.name, raw) if raw else None
                if beat is not None and beat.renewed_within_ttl(left_ms):
                    return False
                pipe.multi()
                pipe.set(self._key, self._beat.dumps(), ex=self._beat.lease_s)
                pipe.execute()
                return True
            except WatchError:
                return False

    def _owned(self) -> bool:
        beat = beat_of(self.redis, self.name)
        return beat is not None and beat.instance == self.instance

    def _write(self, *, nx: bool = False) -> bool:
        """Write the record with the jobs held now (the caller holds the lock, but to claim)."""
        beat = dataclasses.replace(self._beat, jobs=tuple(self._jobs))
        return bool(self.redis.set(self._key, beat.dumps(), ex=beat.lease_s, nx=nx))

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with self._lock, contextlib.suppress(RedisError):
                self._write()  # while Redis is away the worker loop reports it


def beat_of(redis: Redis, name: str) -> Beat | None:
    """The record of worker ``name`` while its jobs count as alive; None once it has lapsed."""
    raw = redis.get(heartbeat_key(name))
    return Beat.loads(name, raw) if raw else None


def live_workers(redis: Redis, queue: str | None = None) -> list[Beat]:
    """The worker processes alive (renewed within their TTL), serving ``queue`` when given."""
    keys = sorted(redis.scan_iter(match=f"{_PREFIX}*", count=500))
    if not keys:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        replies = pipe.execute()
    beats = []
    for key, raw, left_ms in zip(keys, replies[::2], replies[1::2], strict=True):
        name = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(_PREFIX)
        beat = Beat.loads(name, raw) if raw else None
        if beat is None or not beat.renewed_within_ttl(int(left_ms)):
            continue
        if queue is None or beat.queue == queue:
            beats.append(beat)
    return beats
