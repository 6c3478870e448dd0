"""The worker process: RQ's SimpleWorker, customised to outlive Redis outages and bad jobs.

Jobs run in this process (no fork per job), so the model stays loaded. What it adds to RQ,
through RQ's hooks (a worker class, its job and queue classes, exception handlers):

- Redis away (refused, reset, timeouts, LOADING) anywhere in RQ's loop: the worker logs it once,
  pings with capped exponential backoff and resumes the same queue; the jobs the outage cut short
  are queued again (RQ's loop waits only inside its dequeue and quits on any other outage).
  Overridden for it: ``check_for_suspension``, ``run_maintenance_tasks``,
  ``dequeue_job_and_maintain_ttl``, ``heartbeat`` and ``teardown``, each running RQ's own
  method; the queue class reports an outage in its dequeue to the worker instead of to RQ's
  retry loop.
- A liveness record (:mod:`zerolabel.queue.heartbeat`) holding every job from before RQ marks it
  started until RQ has its result; a job that stopped its worker twice fails with the quarantine
  message when picked up instead of running a third time (:mod:`zerolabel.queue.runs`).
- Only transient failures (fetch timeouts, connection errors, HTTP 5xx/429, Redis hiccups) use
  the job's RQ retries; anything else fails the job at once with its message
  (:mod:`zerolabel.queue.failures`).
- Only its own job function runs: a job naming another function, a method or callbacks (anyone
  who reaches Redis can write one) fails before anything it names is imported, with a log line
  (:func:`zerolabel.queue.claims.foreign`).
- ``execute_job`` serves discovery jobs in batches of waiting jobs of the same spec, with the
  downloads of the next batch overlapping the forward pass of this one
  (:mod:`zerolabel.queue.batch`); a job with a strike is served alone.
  ``prepare_job_execution`` skips the jobs a batch already put in RQ's started state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from redis import Redis
from redis.backoff import AbstractBackoff
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty
from rq.worker import WorkerStatus

from zerolabel.contract import DiscoveryRequest, PromptRequest
from zerolabel.errors import ForeignJobError, QuarantinedJobError, RedisUnavailable
from zerolabel.queue.batch import BatchedJob, Batches, admit
from zerolabel.queue.batch_report import BatchObserver
from zerolabel.queue.claims import disarm, foreign
from zerolabel.queue.dispatch import (
    INTERACTIVE_SUFFIX,
    JOB_FUNCTION,
    PROMPT_FUNCTION,
    interactive_queue_name,
)
from zerolabel.queue.failures import AWAY as _AWAY
from zerolabel.queue.failures import is_transient, retry_only_transient, strike_abandoned
from zerolabel.queue.heartbeat import Heartbeat, heartbeat_ttl
from zerolabel.queue.outage import PAUSES, REDIS_DOWN, wait_for_redis
from zerolabel.queue.runs import Runs
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

    job_class = BatchedJob

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
    Redis outages, keeps its liveness record, serves discovery jobs in batches and retries
    only transient failures.

    Args:
        queues: the queues to serve (:class:`OutageAwareQueue`).
        heartbeat: this process's liveness record (it names the worker).
        runs: strikes and the quarantine.
        backoff: pauses between pings while Redis is away.
        runtime: the process's runtime for discovery jobs, built on first use
            (default: :func:`zerolabel.queue.jobs.get_runtime`).
        batch_size: discovery jobs per batch; None: ``ZEROLABEL_WORKER_BATCH`` or by device.
        functions: the import paths of the functions this worker runs; None: the class's
            :attr:`functions` (the discovery job). A job naming any other is failed unrun.
        **kwargs: passed to :class:`rq.SimpleWorker`.
    """

    job_class = BatchedJob
    queue_class = OutageAwareQueue
    functions: frozenset[str] = frozenset({JOB_FUNCTION, PROMPT_FUNCTION})
    """The functions workers run (tests that run functions of their own extend it)."""

    def __init__(
        self,
        queues: list[Queue],
        *,
        heartbeat: Heartbeat,
        runs: Runs,
        backoff: AbstractBackoff = PAUSES,
        runtime: Callable[[], WorkerRuntime] | None = None,
        batch_size: int | None = None,
        functions: Collection[str] | None = None,
        **kwargs: Any,
    ) -> None:
        handlers = [strike_abandoned(runs), retry_only_transient]
        super().__init__(queues, name=heartbeat.name, exception_handlers=handlers, **kwargs)
        self.beat = heartbeat
        self.runs = runs
        if functions is not None:
            self.functions = frozenset(functions)
        self.backoff = backoff
        self.stopping = False  # a warm stop was asked for: no further batch is claimed
        make_runtime = runtime or _process_runtime
        self.batches = Batches(
            self, heartbeat, runs, make_runtime, batch_size, lambda: self.stopping
        )
        self.batches.between_steps = self.serve_prompts

    def handle_warm_shutdown_request(self) -> None:
        self.stopping = True
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]

    # --- names ---------------------------------------------------------------------------------

    def release_stale_registration(self) -> None:
        """Retire RQ's registration of this name left by a process that died without a word.

        Call after the liveness record claimed the name: no live process holds it then.
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
            self.connection, cause, backoff=self.backoff, should_stop=lambda: self.stopping
        )
        if not back:
            raise StopRequested()
        if self.scheduler is not None:  # its process exits when Redis goes: start it again
            with contextlib.suppress(*_AWAY):
                self.scheduler.acquire_locks(auto_start=True)  # type: ignore[no-untyped-call]

    def check_for_suspension(self, burst: bool) -> None:
        self._ride_out(lambda: super(ZerolabelWorker, self).check_for_suspension(burst))

    def run_maintenance_tasks(self) -> None:
        self._ride_out(super().run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        parent = super().dequeue_job_and_maintain_ttl
        return self._ride_out(lambda: parent(timeout, max_idle_time))

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
        assert isinstance(job, BatchedJob), "the worker's job class is BatchedJob"
        try:
            self.beat.hold([job.id])
            request = self._admit(job)
            if request is None:
                super().execute_job(job, queue)
            else:
                self.batches.serve(job, request, queue)
                self.set_state(WorkerStatus.IDLE)
        except _AWAY as exc:
            cut_short = self.beat.held
            self._wait_for_redis(exc)
            for job_id in cut_short:
                self._ride_out(functools.partial(self._requeue, job_id, queue))
        finally:
            self.beat.release(*self.beat.held)

    def _admit(self, job: BatchedJob) -> DiscoveryRequest | None:
        """The job's request when a batch serves it; None when RQ runs it as it is (another
        function, or a job answered at once: foreign, quarantined, or a request this worker
        refuses)."""
        why = foreign(job, self.functions)
        if why is not None:
            logger.warning("job %s refused without running: %s", job.id, why)
            disarm(job)
            job.computed = ForeignJobError(f"job {job.id} refused: {why}")
            return None
        if job.func_name == PROMPT_FUNCTION:
            self._answer_prompt(job)
            return None
        try:
            self.runs.check(job.id)
        except QuarantinedJobError as exc:
            job.computed = exc
            return None
        return admit(job)

    # --- interactive prompts -------------------------------------------------------------------

    def _answer_prompt(self, job: BatchedJob) -> None:
        """Compute a prompt job's answer, which RQ then performs (never retried: a click not
        answered now is worth nothing later)."""
        argument: Any = job.args[0] if len(job.args) == 1 else None
        try:
            asked = PromptRequest.from_dict(argument)
        except (LookupError, TypeError, ValueError) as exc:
            job.computed = ValueError(f"prompt job {job.id}: {exc}")
            return
        try:
            job.computed = self.batches.runtime.prompt(asked)
        except Exception as exc:  # its own failure only: RQ records it for this job
            job.computed = exc

    def serve_prompts(self) -> int:
        """Answer the prompts waiting on the interactive queue now (between two batch steps of
        a pre-labeling run, so a click waits at most one step); how many were served."""
        served = 0
        for queue in self.queues:
            if not queue.name.endswith(INTERACTIVE_SUFFIX):
                continue
            while (raw := self.connection.lpop(queue.key)) is not None:
                job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    job = self.job_class.fetch(job_id, self.connection, self.serializer)
                except NoSuchJobError:
                    continue  # expired while it waited
                assert isinstance(job, BatchedJob), "the worker's job class is BatchedJob"
                self.beat.hold([job.id])
                try:
                    execution = self.prepare_execution(job)
                    if self._admit(job) is not None:  # a discovery job on the wrong queue
                        job.computed = ValueError("a discovery job on the interactive queue")
                    self.perform_job(job, queue, execution)
                finally:
                    self.beat.release(job.id)
                served += 1
        return served

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if isinstance(job, BatchedJob) and job.started:
            return  # a batch put it in RQ's started state when it claimed it
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def _requeue(self, job_id: str, queue: Queue) -> None:
        """Queue again (at the front) a job whose run or result the outage lost."""
        try:
            job = self.job_class.fetch(job_id, self.connection, self.serializer)
        except NoSuchJobError:
            return
        status = job.get_status(refresh=False)
        ours = status == JobStatus.STARTED and job.worker_name == self.name
        stuck = status == JobStatus.QUEUED and job_id in queue.intermediate_queue.get_job_ids()
        executions = [e for e in self.executions.values() if e.job_id == job_id]
        with self.connection.pipeline() as pipe:
            for execution in executions:  # this run's entries in RQ's registries
                self.cleanup_execution(job, pipe, execution)
            if ours or stuck:
                pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            pipe.execute()
        if ours or stuck:  # else finished, failed or queued again meanwhile
            queue.enqueue_job(job, at_front=True)
            logger.warning("job %s was cut short by the Redis outage; queued again", job_id)


def make_worker_queue(redis: Redis, settings: QueueSettings) -> OutageAwareQueue:
    return OutageAwareQueue(settings.queue, connection=redis, serializer=JSONSerializer)


def make_worker_queues(redis: Redis, settings: QueueSettings) -> list[Queue]:
    """The queues a worker serves, in the order RQ dequeues them: prompts first."""
    interactive = OutageAwareQueue(
        interactive_queue_name(settings), connection=redis, serializer=JSONSerializer
    )
    return [interactive, make_worker_queue(redis, settings)]


def run_worker(
    redis: Redis,
    settings: QueueSettings,
    name: str | None = None,
    burst: bool = False,
    *,
    with_scheduler: bool = True,
    runtime: WorkerRuntime | None = None,
    observers: Sequence[BatchObserver] = (),
    functions: Collection[str] | None = None,
) -> ZerolabelWorker:
    """Serve jobs in this process until stopped; returns the worker (its batch stats).

    Args:
        runtime: what serves discovery jobs; default :func:`zerolabel.queue.jobs.get_runtime`.
        observers: called with every batch's :class:`~zerolabel.queue.batch_report.BatchReport`
            (metrics); an observer that raises is logged and changes nothing else.
        functions: the functions the worker runs, by import path (see :class:`ZerolabelWorker`).

    Raises:
        WorkerNameInUse: a live worker process already serves under ``name``.
    """
    ttl = heartbeat_ttl(settings.lease_s)
    name = name or uuid.uuid4().hex
    with Heartbeat(redis, name, settings.queue, ttl, lease_s=settings.lease_s) as beat:
        worker = ZerolabelWorker(
            make_worker_queues(redis, settings),
            heartbeat=beat,
            runs=Runs(redis, settings.result_ttl_s),
            runtime=(lambda: runtime) if runtime is not None else None,
            connection=redis,
            serializer=JSONSerializer,
            functions=functions,
        )
        worker.batches.observers.extend(observers)
        worker.release_stale_registration()
        worker.work(burst=burst, with_scheduler=with_scheduler)
        return worker


def _process_runtime() -> WorkerRuntime:
    from zerolabel.queue import jobs

    return jobs.get_runtime()
