"""The worker process: serves the queue in-process, outlives Redis outages and bad jobs.

- Redis away (refused, reset, timeouts, LOADING): the worker logs it once, pings with capped
  exponential backoff and resumes the same queue; a job the outage cut short is queued again.
- Its heartbeat (:mod:`zerolabel.queue.heartbeat`) is renewed by a thread, also during jobs.
- Every run is recorded (:class:`~zerolabel.queue.leases.Runs`): a job whose runs stopped their
  worker twice fails with the quarantine message instead of running a third time.
- Only transient failures (fetch timeouts, connection errors, HTTP 5xx/429, Redis hiccups) use
  the job's RQ retries; anything else fails the job at once with its message.
- Discovery jobs are served in batches of waiting jobs of the same spec, with the downloads of
  the next batch overlapping the forward pass of this one (:mod:`zerolabel.queue.batch`); a job
  with a strike is served alone, jobs of other functions run as RQ runs them. A Redis outage
  queues again every job of the batch that was not finished.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError, StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.worker import WorkerStatus

from zerolabel.queue.batch import Batches
from zerolabel.queue.batch_report import BatchObserver
from zerolabel.queue.failures import AWAY as _AWAY
from zerolabel.queue.failures import is_transient, retry_only_transient
from zerolabel.queue.heartbeat import Heartbeat, heartbeat_ttl
from zerolabel.queue.leases import RunRecord, Runs, lease_key
from zerolabel.queue.outage import REDIS_DOWN, Backoff, RedisUnavailable, wait_for_redis
from zerolabel.settings import QueueSettings

if TYPE_CHECKING:
    from zerolabel.queue.runtime import WorkerRuntime

__all__ = [
    "OutageAwareQueue",
    "ZerolabelWorker",
    "is_transient",
    "retry_only_transient",
    "run_worker",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class OutageAwareQueue(Queue):
    """A queue whose blocking dequeue reports Redis going away to the worker, not to RQ's loop."""

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: type[BaseDeathPenalty] | None = None,
    ) -> tuple[Job, Queue] | None:
        try:
            return super().dequeue_any(
                queues, timeout, connection, job_class, serializer, death_penalty_class
            )
        except REDIS_DOWN as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc


class ZerolabelWorker(SimpleWorker):
    """An RQ SimpleWorker (jobs run in this process, the model stays loaded) that waits out
    Redis outages, records its runs and retries only transient failures.

    Args:
        queues: the queues to serve (:class:`OutageAwareQueue`).
        heartbeat: this process's heartbeat (it names the worker).
        runs: run records and strikes.
        backoff: pauses between pings while Redis is away.
        runtime: the process's runtime for batched discovery jobs, built on first use
            (default: :func:`zerolabel.queue.jobs.get_runtime`).
        batch_size: discovery jobs per batch; None: ``ZEROLABEL_WORKER_BATCH`` or by device.
        lease_s: the lease TTL of the jobs a batch holds.
        **kwargs: passed to :class:`rq.SimpleWorker`.
    """

    def __init__(
        self,
        queues: list[Queue],
        *,
        heartbeat: Heartbeat,
        runs: Runs,
        backoff: Backoff | None = None,
        runtime: Callable[[], WorkerRuntime] | None = None,
        batch_size: int | None = None,
        lease_s: int = 15,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            queues,
            name=heartbeat.name,
            queue_class=OutageAwareQueue,
            exception_handlers=[retry_only_transient],
            **kwargs,
        )
        self.beat = heartbeat
        self.runs = runs
        self.backoff = backoff or Backoff()
        self.record = RunRecord(heartbeat.name, heartbeat.instance)
        self.batches = Batches(self, runtime or _process_runtime, batch_size, lease_s)
        self._claimed: dict[str, Execution] = {}  # batched jobs in RQ's started state

    @property
    def stop_requested(self) -> bool:
        """Whether a (warm) stop was asked for: no further batch is claimed."""
        return bool(self._stop_requested)

    # --- names ---------------------------------------------------------------------------------

    def release_stale_registration(self) -> None:
        """Retire RQ's registration of this name left by a process that died without a word.

        Call after the heartbeat claimed the name: no live process holds it then.
        """
        if self.connection.exists(self.key) and not self.connection.hexists(self.key, "death"):
            logger.warning("worker name %r was left registered by a dead process", self.name)
            self.register_death()  # type: ignore[no-untyped-call]

    # --- Redis outages -------------------------------------------------------------------------

    def _ride_out(self, action: Callable[[], T]) -> T:
        """``action()``, run again after each Redis outage until it completes."""
        while True:
            try:
                return action()
            except _AWAY as exc:
                self._wait_for_redis(exc)

    def _wait_for_redis(self, exc: BaseException) -> None:
        cause = exc.__cause__ if isinstance(exc, RedisUnavailable) and exc.__cause__ else exc
        back = wait_for_redis(
            self.connection, cause, backoff=self.backoff, should_stop=lambda: self._stop_requested
        )
        if not back:
            raise StopRequested()
        self._restart_scheduler()

    def _restart_scheduler(self) -> None:
        """The scheduler process (retries with a delay) exits when Redis goes; start it again."""
        if self.scheduler is not None:
            with contextlib.suppress(*_AWAY):
                self.scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """RQ's command channel: while Redis is away, retry quietly (the work loop reports it)."""
        if not isinstance(exc, REDIS_DOWN):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        logger.debug("command channel: %s", exc)
        time.sleep(2.0)

    def check_for_suspension(self, burst: bool) -> None:
        self._ride_out(lambda: super(ZerolabelWorker, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        self._ride_out(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        parent = SimpleWorker.dequeue_job_and_maintain_ttl
        return self._ride_out(lambda: parent(self, timeout, max_idle_time))

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            super().heartbeat(timeout)
        except REDIS_DOWN as exc:  # the next dequeue waits for Redis
            logger.debug("RQ heartbeat not sent: %s", exc)

    def teardown(self) -> None:
        self.batches.close()
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except REDIS_DOWN as exc:
            logger.warning("could not record this worker's exit in Redis: %s", exc)

    # --- runs ----------------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        self.beat.working_on(job.id)
        try:
            request = self.batches.accepts(job)
            if request is None:
                super().execute_job(job, queue)
            else:
                self.batches.serve(job, request, queue)
                self.set_state(WorkerStatus.IDLE)
        except _AWAY as exc:
            self._wait_for_redis(exc)
            for job_id in self._cut_short(job.id):
                self._requeue_cut_short(job_id, queue)
        finally:
            self._cut_short(job.id)  # after another error: their leases lapse, the backend
            self.beat.working_on(None)  # queues them again

    def start_claimed(self, job: Job) -> Execution:
        """Move a job claimed for a batch into RQ's started state, as RQ does the one it dequeues
        (its run is recorded later, when the batch runs)."""
        execution = self.prepare_execution(job)
        super().prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        self._claimed[job.id] = execution
        return execution

    def finish_claimed(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Run a batched job through RQ's own ``perform_job`` (its answer is computed already).

        When Redis goes away meanwhile the job stays among those to queue again.
        """
        self.perform_job(job, queue, execution)
        self._claimed.pop(job.id, None)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if job.id in self._claimed:
            return  # a batched job: prepared when claimed, its run recorded when the batch ran
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        self.runs.begin(job.id, self.record)  # QuarantinedJobError fails the job, unrun

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        super().handle_execution_ended(job, queue, heartbeat_ttl)
        self.runs.end(job.id, self.record)

    def _cut_short(self, job_id: str) -> list[str]:
        """The jobs this worker took and did not finish (``job_id`` first); forgets them and
        releases their leases."""
        unfinished = list(dict.fromkeys([job_id, *self.batches.abandon(), *self._claimed]))
        for execution in self._claimed.values():
            self.executions.pop(execution.id, None)
        self._claimed.clear()
        return unfinished

    def _requeue_cut_short(self, job_id: str, queue: Queue) -> None:
        """Queue again (at the front) a job whose run or result the outage lost."""
        self._ride_out(lambda: self._requeue(job_id, queue))

    def _requeue(self, job_id: str, queue: Queue) -> None:
        self.runs.end(job_id, self.record)
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            return
        status = job.get_status(refresh=False)
        ours = status == JobStatus.STARTED and job.worker_name == self.name
        stuck = status == JobStatus.QUEUED and job_id in queue.intermediate_queue.get_job_ids()
        if not (ours or stuck):
            return  # finished, failed or queued again meanwhile
        registry = queue.started_job_registry
        executions = [
            f"{jid}:{eid}"
            for jid, eid in registry.get_job_and_execution_ids(cleanup=False)
            if jid == job_id
        ]
        with self.connection.pipeline() as pipe:
            if executions:
                pipe.zrem(registry.key, *executions)
            pipe.lrem(queue.intermediate_queue.key, 0, job_id)
            pipe.delete(lease_key(job_id))
            pipe.execute()
        queue.enqueue_job(job, at_front=True)
        logger.warning("job %s was cut short by the Redis outage; queued again", job_id)


def make_worker_queue(redis: Redis, settings: QueueSettings) -> OutageAwareQueue:
    return OutageAwareQueue(settings.queue, connection=redis, serializer=JSONSerializer)


def run_worker(
    redis: Redis,
    settings: QueueSettings,
    name: str | None = None,
    burst: bool = False,
    *,
    with_scheduler: bool = True,
    runtime: WorkerRuntime | None = None,
    observers: Sequence[BatchObserver] = (),
) -> ZerolabelWorker:
    """Serve jobs in this process until stopped; returns the worker (its batch stats).

    Args:
        runtime: what serves discovery jobs; default :func:`zerolabel.queue.jobs.get_runtime`.
        observers: called with every batch's :class:`~zerolabel.queue.batch.BatchReport`
            (metrics); an observer that raises is logged and changes nothing else.

    Raises:
        WorkerNameInUse: a live worker process already serves under ``name``.
    """
    ttl = heartbeat_ttl(settings.lease_s)
    with Heartbeat(redis, name or uuid.uuid4().hex, settings.queue, ttl) as beat:
        worker = ZerolabelWorker(
            [make_worker_queue(redis, settings)],
            heartbeat=beat,
            runs=Runs(redis, settings.result_ttl_s),
            runtime=(lambda: runtime) if runtime is not None else None,
            lease_s=settings.lease_s,
            connection=redis,
            serializer=JSONSerializer,
        )
        worker.batches.observers.extend(observers)
        worker.release_stale_registration()
        worker.work(burst=burst, with_scheduler=with_scheduler)
        return worker


def _process_runtime() -> WorkerRuntime:
    from zerolabel.queue.jobs import get_runtime

    return get_runtime()
