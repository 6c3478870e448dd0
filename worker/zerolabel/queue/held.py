"""The leases of every job a batching worker holds, renewed together by one thread.

A job a worker takes into a batch holds ``zerolabel:lease:<job id>`` (see
:mod:`zerolabel.queue.leases`) from the moment it is claimed until its result is written, also
while it only waits for its download or for the batch ahead of it: the backend then never takes
it for a job whose worker died. One daemon thread renews them all with one round trip per
renewal, instead of one thread per job. When the worker dies the keys expire within
``lease_s``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError

from zerolabel.queue.leases import lease_key


class HeldLeases:
    """Leases of the jobs this process holds.

    Args:
        redis: the worker's connection.
        lease_s: lease TTL; renewed three times per TTL.
    """

    def __init__(self, redis: Redis, lease_s: int) -> None:
        self.redis = redis
        self.lease_s = lease_s
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> set[str]:
        """The job ids held now (a copy)."""
        with self._lock:
            return set(self._held)

    def hold(self, job_ids: Iterable[str]) -> None:
        """Take the leases of ``job_ids`` now; they are renewed until released.

        Raises:
            redis.exceptions.RedisError: Redis is away (the caller waits for it).
        """
        ids = list(job_ids)
        if not ids:
            return
        with self._lock:
            self._held.update(ids)
        self._write(ids)
        self._start()

    def release(self, job_id: str) -> None:
        """Stop renewing the lease of ``job_id`` and delete it (quietly while Redis is away)."""
        with self._lock:
            self._held.discard(job_id)
        with contextlib.suppress(RedisError):
            self.redis.delete(lease_key(job_id))

    def close(self) -> None:
        """Stop the renewal thread and release every lease still held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for job_id in self.held:
            self.release(job_id)

    def _start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._renew, name="zerolabel-leases", daemon=True
            )
            self._thread.start()

    def _write(self, job_ids: Iterable[str]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.set(lease_key(job_id), os.getpid(), ex=self.lease_s)
            pipe.execute()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            ids = self.held
            if not ids:
                continue
            with contextlib.suppress(RedisError):  # renewal resumes when Redis is back
                self._write(ids)
                released = ids - self.held  # released while this renewal was on its way
                if released:
                    self.redis.delete(*(lease_key(job_id) for job_id in released))
