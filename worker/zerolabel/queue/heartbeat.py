"""Worker heartbeats: which worker processes are alive right now.

Each worker process holds ``zerolabel:worker:<name>`` with a TTL of a few seconds and renews it
from a daemon thread, also while a job runs and while Redis is away (renewal resumes when it is
back). The value names the process (a random instance id), so a worker restarted under the same
name is told apart from the one that died. RQ's own worker registrations outlive a killed
process by many minutes; these keys lapse within their TTL.
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
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from zerolabel.errors import DiscoveryError

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_S = 5
"""The longest a heartbeat lives without renewal (shorter when the lease is shorter)."""

_PREFIX = "zerolabel:worker:"


class WorkerNameInUse(DiscoveryError):
    """Another live worker process already serves under this name."""


def heartbeat_key(name: str) -> str:
    return f"{_PREFIX}{name}"


def heartbeat_ttl(lease_s: int) -> int:
    """Heartbeats lapse no later than leases, so a dead worker is known by the time its lease is."""
    return max(1, min(HEARTBEAT_TTL_S, lease_s))


@dataclass(frozen=True)
class Beat:
    """What a heartbeat says about its worker process."""

    name: str
    queue: str
    instance: str
    pid: int
    host: str
    job: str | None = None

    def dumps(self) -> str:
        return json.dumps(
            {
                "queue": self.queue,
                "instance": self.instance,
                "pid": self.pid,
                "host": self.host,
                "job": self.job,
            }
        )

    @classmethod
    def loads(cls, name: str, raw: bytes | str) -> Beat | None:
        """The beat stored under ``name``, or None when the value is not one."""
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(
                name,
                str(data["queue"]),
                str(data["instance"]),
                int(data["pid"]),
                str(data["host"]),
                data.get("job"),
            )
        except (ValueError, KeyError, TypeError):
            return None


class Heartbeat:
    """Claims a worker name and keeps its heartbeat alive from a daemon thread.

    Use as a context manager: entering claims the name (waiting up to one TTL for the heartbeat
    of a dead process with the same name to lapse), leaving stops the thread and deletes the key.

    Args:
        redis: the worker's connection.
        name: the RQ worker name.
        queue: the queue the worker serves (reported by health).
        ttl_s: heartbeat TTL; renewed four times per TTL.
    """

    def __init__(self, redis: Redis, name: str, queue: str, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.instance = uuid.uuid4().hex
        self._beat = Beat(name, queue, self.instance, os.getpid(), socket.gethostname())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key = heartbeat_key(name)

    @property
    def name(self) -> str:
        return self._beat.name

    def working_on(self, job_id: str | None) -> None:
        """Record the job being run (None when idle); written at the next renewal."""
        self._beat = dataclasses.replace(self._beat, job=job_id)

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
        """Take the name; a heartbeat still held after one TTL belongs to a live worker.

        Raises:
            WorkerNameInUse: another live process keeps the heartbeat of this name alive.
        """
        deadline = time.monotonic() + self.ttl_s + 1
        while not self.redis.set(self._key, self._beat.dumps(), nx=True, ex=self.ttl_s):
            if time.monotonic() >= deadline:
                raise WorkerNameInUse(
                    f"a live worker named {self.name!r} already serves this Redis; "
                    "give this one another --name"
                )
            time.sleep(poll_s)

    def _owned(self) -> bool:
        raw = self.redis.get(self._key)
        beat = Beat.loads(self.name, raw) if raw else None
        return beat is not None and beat.instance == self.instance

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self.redis.set(self._key, self._beat.dumps(), ex=self.ttl_s)
            except RedisError:
                pass  # Redis is away; the worker loop reports it, renewal resumes when it is back


def live_workers(redis: Redis, queue: str | None = None) -> list[Beat]:
    """The worker processes with a live heartbeat, serving ``queue`` when given."""
    keys = sorted(redis.scan_iter(match=f"{_PREFIX}*", count=500))
    if not keys:
        return []
    beats = []
    for key, raw in zip(keys, redis.mget(keys), strict=True):
        name = (key.decode() if isinstance(key, bytes) else str(key)).removeprefix(_PREFIX)
        beat = Beat.loads(name, raw) if raw else None
        if beat is not None and (queue is None or beat.queue == queue):
            beats.append(beat)
    return beats


def is_alive(redis: Redis, name: str, instance: str) -> bool:
    """Whether the process ``instance`` still keeps the heartbeat of worker ``name`` alive."""
    raw = redis.get(heartbeat_key(name))
    beat = Beat.loads(name, raw) if raw else None
    return beat is not None and beat.instance == instance
