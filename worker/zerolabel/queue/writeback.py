"""Predictions written to Label Studio when a task's job finishes after ``/predict`` answered.

What it adds to RQ: RQ hands a result to whoever waits for the job; here a result is also
delivered, exactly once, to the Label Studio tasks that stopped waiting for it.

Label Studio 1.23 asks ``/predict`` once per Retrieve Predictions and never again for a task it
got no prediction for. When ``/predict`` answers before a task's job finished, the backend
records here that the task waits for that job (:meth:`Ledger.wait`); the worker that finishes
the job writes the prediction to the task through the Label Studio API
(:meth:`WriteBack.job_finished`).

Exactly one prediction per task and model_version: the backend's answer and the worker's
write-back claim the same key per (Label Studio origin, task, model_version), and only the one
that claims it delivers. Before posting, the worker also looks at the task's predictions in
Label Studio, so a prediction stored before Redis lost its keys is not posted twice.

Ordering: the worker publishes the job's result and reads the waiting tasks in one
transaction; the backend records a waiting task and reads the published result in another.
Either the worker sees the task, or the backend sees the result and answers it itself: a job
finishing while the backend records its task never leaves the task without a prediction.

Nothing here holds a credential: keys and values name the Label Studio by its configured URL,
and the worker posts with its own ``LABEL_STUDIO_API_KEY`` to ``LABEL_STUDIO_URL`` only, for
tasks whose origin is one of its configured sites. What a ``/predict`` call says about a task is
not trusted for the write: the worker reads the task from Label Studio and posts only when the
task belongs to the project the ``/predict`` came for and its own image URL (at the labeling
config's data key) is the one the job computed, so a caller cannot have another image's regions,
or another project's labels, written to a task.

The worker's read never makes Label Studio call the backend: it goes through the project's
export (:meth:`LabelStudioClient.project_tasks`), not ``GET /api/tasks/<id>``, which with
Label Studio's default "Use predictions to prelabel tasks" calls ``/predict`` synchronously for
a task without predictions, and so would wait on the very job the worker is finishing.

Keys:
  zerolabel:waiting:<job id>    hash: "<origin> <task id>" -> :class:`Waiting` (JSON)
  zerolabel:finished:<job id>   the finished job's result (JSON), kept for retries
  zerolabel:delivered:<origin digest>:<task id>:<model_version>
                                who delivers that prediction (the backend's answer or a worker)
  zerolabel:writeback:due       sorted set: jobs whose deliveries are tried again, by time
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from zerolabel import metrics
from zerolabel.contract import DiscoveryResult
from zerolabel.errors import DiscoveryError, LabelStudioError
from zerolabel.labelstudio import tasks as ls_format
from zerolabel.labelstudio.client import LabelStudioClient, is_transient
from zerolabel.settings import WorkerSettings
from zerolabel.sites import LS_TOKEN_SETTING, LS_URL_SETTING, LabelStudioSites

logger = logging.getLogger(__name__)

WAITING_TTL_S = 86_400
"""How long a waiting task is remembered while its job is queued or running (at most the
retention, ``ZEROLABEL_RESULT_TTL_S``, like every key here)."""
FINISHED_TTL_S = 3_600
"""How long a finished job's result is kept for deliveries that are tried again (at most the
retention)."""
HOLD_MARGIN_S = 60
"""Added to the backend's wait to get how long a delivery claim holds."""
MIN_HOLD_S = 120
"""The shortest claim a worker takes while it posts."""
RETRY_S = 60
"""Pause before a delivery that failed for a transient reason is tried again."""
RETRY_BATCH = 20
"""Jobs whose deliveries are tried again after each finished job, at most."""
DUE_KEY = "zerolabel:writeback:due"


def _waiting_key(job_id: str) -> str:
    return f"zerolabel:waiting:{job_id}"


def _finished_key(job_id: str) -> str:
    return f"zerolabel:finished:{job_id}"


def _claim_key(origin: str, task_id: int, model_version: str) -> str:
    digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return f"zerolabel:delivered:{digest}:{task_id}:{model_version}"


def hold_s(wait_timeout_s: float) -> int:
    """How long a delivery claim holds: longer than one ``/predict`` can wait."""
    return int(wait_timeout_s) + HOLD_MARGIN_S


@dataclass(frozen=True)
class Waiting:
    """A Label Studio task that waits for a job's result.

    Attributes:
        task_id: the task's id in that Label Studio.
        origin: the configured Label Studio URL its ``/setup`` named.
        model_version: the version the backend answers with for its project.
        target: where the regions go in the project's labeling config.
        hold_s: how long a delivery claim holds (:func:`hold_s`).
        project_id: the project whose ``/predict`` asked for the task; the task must be in it.
    """

    task_id: int
    origin: str
    model_version: str
    target: ls_format.Target
    hold_s: int
    project_id: int | None = None

    @property
    def field(self) -> str:
        return f"{self.origin} {self.task_id}"

    @property
    def claim_key(self) -> str:
        return _claim_key(self.origin, self.task_id, self.model_version)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Waiting | None:
        """The waiting task, or None for a value this version cannot read."""
        try:
            data = json.loads(raw)
            target = ls_format.Target(**data.pop("target"))
            return cls(target=target, **data)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


class Ledger:
    """The backend's side: records waiting tasks and claims the tasks it answers."""

    def __init__(self, redis: Redis, keep_s: int = WAITING_TTL_S) -> None:
        self.redis = redis
        self.keep_s = keep_s

    def wait(self, job_id: str, waiting: Waiting) -> DiscoveryResult | None:
        """Record that ``waiting`` waits for the job; the job's result if it just finished.

        When a result comes back the worker may not have seen this record: answer the task
        with it, after :meth:`may_answer`.
        """
        key = _waiting_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, waiting.field, waiting.to_json())
            pipe.expire(key, min(WAITING_TTL_S, self.keep_s))
            pipe.get(_finished_key(job_id))
            raw = pipe.execute()[-1]
        return DiscoveryResult.from_dict(json.loads(raw)) if raw else None

    def may_answer(self, job_id: str, waiting: Waiting) -> bool:
        """Whether ``/predict`` may answer the task with its finished result.

        A task some ``/predict`` left waiting is claimed first (the worker claims it too);
        any other task is answered unless a worker delivered it within the claim's time.
        """
        key = _waiting_key(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hexists(key, waiting.field)
            pipe.exists(waiting.claim_key)
            waited, claimed = pipe.execute()
        if not waited:
            return not claimed
        hold_s = min(waiting.hold_s, self.keep_s)
        if not self.redis.set(waiting.claim_key, "answer", nx=True, ex=hold_s):
            return False
        self.redis.hdel(key, waiting.field)
        return True


class WriteBack:
    """The worker's side: posts finished results to the Label Studio tasks that wait for them.

    Not thread-safe (it keeps one Label Studio client): use one per thread.

    Args:
        redis: the queue's Redis.
        sites: the worker's configured Label Studio; waiting tasks of other origins are
            refused.
        token: ``LABEL_STUDIO_API_KEY``; None: nothing is written.
        connect: builds the Label Studio client (tests pass a fake).
        clock: wall clock for retries.
        keep_s: the retention (``ZEROLABEL_RESULT_TTL_S``): no key lives longer.
    """

    def __init__(
        self,
        redis: Redis,
        sites: LabelStudioSites,
        token: str | None,
        *,
        connect: Callable[[str, str], LabelStudioClient] = LabelStudioClient,
        clock: Callable[[], float] = time.time,
        keep_s: int = WAITING_TTL_S,
    ) -> None:
        self.redis = redis
        self.keep_s = keep_s
        self.sites = sites
        self._token = token
        self._connect = connect
        self._clock = clock
        self._client: LabelStudioClient | None = None
        self.owner = f"worker {socket.gethostname()} {os.getpid()} {uuid.uuid4().hex[:8]}"

    def job_finished(self, job_id: str, result: DiscoveryResult) -> int:
        """Publish the job's result and deliver it to its waiting tasks; how many were written."""
        with self.redis.pipeline(transaction=True) as pipe:
            keep_s = min(FINISHED_TTL_S, self.keep_s)
            pipe.set(_finished_key(job_id), json.dumps(result.to_dict()), ex=keep_s)
            pipe.hgetall(_waiting_key(job_id))
            entries = pipe.execute()[-1]
        if not entries:
            return 0
        self.redis.zadd(DUE_KEY, {job_id: self._clock() + RETRY_S})  # if this process dies
        return self._deliver(job_id, result, entries)

    def retry_due(self, limit: int = RETRY_BATCH) -> int:
        """Deliver again what failed for a transient reason and is due; how many were written."""
        written = 0
        for raw_id in self.redis.zrangebyscore(DUE_KEY, "-inf", self._clock(), 0, limit):
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            raw = self.redis.get(_finished_key(job_id))
            entries = self.redis.hgetall(_waiting_key(job_id))
            if not raw or not entries:
                self.redis.zrem(DUE_KEY, job_id)
                continue
            result = DiscoveryResult.from_dict(json.loads(raw))
            written += self._deliver(job_id, result, entries)
        return written

    def _deliver(self, job_id: str, result: DiscoveryResult, entries: dict[Any, Any]) -> int:
        written = 0
        for field, raw in entries.items():
            waiting = Waiting.from_json(raw)
            if waiting is None:
                self.redis.hdel(_waiting_key(job_id), field)
                continue
            written += self._deliver_one(job_id, result, waiting)
        if self.redis.hlen(_waiting_key(job_id)):
            self.redis.zadd(DUE_KEY, {job_id: self._clock() + RETRY_S})
        else:
            self.redis.zrem(DUE_KEY, job_id)
        return written

    def _deliver_one(self, job_id: str, result: DiscoveryResult, waiting: Waiting) -> int:
        """Claim, check and post one task's prediction; 1 when it was written."""
        task = waiting.task_id
        refusal = self._refusal(result, waiting)
        if refusal is not None:
            logger.warning("task %s: no prediction written to Label Studio: %s", task, refusal)
            self._done(job_id, waiting)
            metrics.observe_writeback("failed")
            return 0
        claim_s = min(max(waiting.hold_s, MIN_HOLD_S), self.keep_s)
        if not self.redis.set(waiting.claim_key, self.owner, nx=True, ex=claim_s):
            return 0  # answered by /predict, or another worker delivers it
        try:
            written = self._post(result, waiting)
        except (LabelStudioError, ValueError) as exc:
            self._release(waiting)
            if isinstance(exc, LabelStudioError) and is_transient(exc):
                logger.warning("task %s: prediction not written yet (tried again): %s", task, exc)
                return 0  # still waiting: retry_due tries it again
            logger.error("task %s: prediction not written to Label Studio: %s", task, exc)
            metrics.observe_writeback("failed")
            self._done(job_id, waiting)
            return 0
        self._done(job_id, waiting)
        metrics.observe_writeback("written" if written else "skipped")
        return int(written)

    def _refusal(self, result: DiscoveryResult, waiting: Waiting) -> str | None:
        """Why this task's prediction cannot be written, or None."""
        if result.error:
            return f"{result.error} (ask again with Retrieve Predictions)"
        if self.sites.find(waiting.origin) is None:
            return (
                f"its Label Studio at {waiting.origin} is not the one this worker is configured "
                f"for ({self.sites.describe()}); refused"
            )
        if not self._token:
            return f"set {LS_TOKEN_SETTING} on the workers to write late predictions"
        if waiting.project_id is None:
            return "the /predict that asked for it named no project; refused"
        return None

    def _post(self, result: DiscoveryResult, waiting: Waiting) -> bool:
        """Post unless Label Studio already has a prediction of this version for the task.

        Raises:
            LabelStudioError: a call failed.
            ValueError: the task is not in the project, its image is not the result's, or the
                regions cannot be rendered in the project's labeling config.
        """
        client = self._label_studio()
        project = waiting.project_id
        assert project is not None  # _refusal refuses waiting tasks without a project
        found = client.project_tasks(project, [waiting.task_id])
        if not found:
            raise ValueError(f"the task is not in project {project} in Label Studio; refused")
        task = found[0]
        data = task.get("data")
        image = data.get(waiting.target.data_key) if isinstance(data, dict) else None
        if image != result.source:
            raise ValueError(
                f"the task's ${waiting.target.data_key} in Label Studio is not the image this "
                "prediction was computed for; refused"
            )
        version = waiting.model_version
        stored = task.get("predictions") or []
        if any(isinstance(p, dict) and p.get("model_version") == version for p in stored):
            logger.info("task %s: Label Studio already has its prediction", waiting.task_id)
            return False
        entry = ls_format.prediction(
            dataclasses.replace(result, model_version=version), waiting.target
        )
        client.create_prediction(
            waiting.task_id, entry["result"], entry["score"], version, project=project
        )
        logger.info("task %s: prediction written to Label Studio", waiting.task_id)
        return True

    def _label_studio(self) -> LabelStudioClient:
        """The client for ``LABEL_STUDIO_URL`` (the primary site), made on first use."""
        primary = self.sites.primary
        if primary is None or not self._token:
            raise ValueError(f"set {LS_URL_SETTING} and {LS_TOKEN_SETTING} on the workers")
        if self._client is None:
            self._client = self._connect(primary.url, self._token)
        return self._client

    def _done(self, job_id: str, waiting: Waiting) -> None:
        self.redis.hdel(_waiting_key(job_id), waiting.field)

    def _release(self, waiting: Waiting) -> None:
        """Drop the claim if it is still this worker's, so the task can be delivered again."""
        owner = self.owner.encode()

        def drop(pipe: Pipeline) -> None:
            if pipe.get(waiting.claim_key) == owner:
                pipe.multi()
                pipe.delete(waiting.claim_key)

        self.redis.transaction(drop, waiting.claim_key)


_local = threading.local()


def after_job(
    redis: Redis | None, settings: WorkerSettings, job_id: str | None, result: DiscoveryResult
) -> None:
    """Write a finished job's result to the tasks waiting for it; logs failures, never raises.

    Called by the job once its result is ready, before it returns it.
    """
    if redis is None or job_id is None:
        return
    try:
        writer = _writer(redis, settings)
        writer.job_finished(job_id, result)
        writer.retry_due()
    except (RedisError, DiscoveryError, ValueError) as exc:  # the job's own result stands
        logger.warning("job %s: late predictions not written: %s", job_id, exc)


def _writer(redis: Redis, settings: WorkerSettings) -> WriteBack:
    """This thread's writer for these settings (its Label Studio client is kept)."""
    cached: tuple[Redis, WorkerSettings, WriteBack] | None = getattr(_local, "writer", None)
    if cached is not None and cached[0] is redis and cached[1] is settings:
        return cached[2]
    keep_s = settings.queue.result_ttl_s
    writer = WriteBack(redis, settings.ls_sites(), settings.ls_token, keep_s=keep_s)
    _local.writer = (redis, settings, writer)
    return writer
