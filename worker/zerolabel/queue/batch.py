"""Discovery jobs served in batches: one job per image, many jobs per forward pass.

What it adds to RQ: RQ hands a worker one job and runs its function. Each discovery job still
carries one image and spec (job id = ``DiscoveryRequest.job_id``), but a worker serves the one
it dequeued like this, the only way a discovery job runs:

1. **Claim.** It takes up to B-1 more waiting jobs of the same spec from its queue
   (:mod:`zerolabel.queue.claims`), holds them in its liveness record
   (:mod:`zerolabel.queue.heartbeat`) and moves each into RQ's started state with RQ's own
   bookkeeping (an execution in the StartedJobRegistry, the job's status, worker name and start).
   A worker killed from now on leaves started jobs that no live record holds: the backend queues
   them again, each with a strike, so each runs alone next time (:mod:`zerolabel.queue.runs`).
2. **Load.** A small thread pool downloads and decodes the images and looks up the result
   cache, one task per job (:meth:`WorkerRuntime.load`).
3. **Prefetch.** When the batch's images are loaded the worker claims the next batch of the same
   spec (only when a job of that spec is next in the queue, so another spec at the head is not
   kept waiting) and starts loading it, then runs the current batch: the downloads of batch n+1
   overlap the forward pass of batch n.
4. **Run.** Interactive prompts waiting on the interactive queue are answered first
   (:mod:`zerolabel.queue.interactive`), so a click waits for at most one batch step. Then the
   images still to compute go through one batched run
   (:meth:`WorkerRuntime.compute`: images of the same padded size share forward passes of up to
   ``ZEROLABEL_BATCH_SIZE``), under RQ's job timeout.
5. **Finish.** Each job then goes through RQ's own ``perform_job``, where the job (a
   :class:`BatchedJob`, the worker's job class) answers with the outcome computed for it: results,
   failures, exception handlers, transient-only retries and registries are RQ's single-job paths,
   so one bad image fails only its own job. Late tasks get their prediction written first
   (:mod:`zerolabel.queue.writeback`).

B is ``ZEROLABEL_WORKER_BATCH`` (default by device: :meth:`WorkerRuntime.worker_batch`). A job
with a strike is served alone and never claimed into a batch. A Redis outage mid-batch queues again
every job of the batch not finished yet (:mod:`zerolabel.queue.worker`).

Per-batch numbers go to :attr:`Batches.observers` (:mod:`zerolabel.queue.batch_report`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import BaseWorker

from zerolabel.contract import DiscoveryRequest, DiscoveryResult
from zerolabel.errors import ConfigError, DiscoveryError
from zerolabel.queue.batch_report import BatchObserver, BatchReport, BatchStats, record_queue_stages
from zerolabel.queue.claims import Claimer, is_discovery
from zerolabel.queue.heartbeat import Heartbeat
from zerolabel.queue.runs import Runs
from zerolabel.queue.runtime import Loaded, WorkerRuntime
from zerolabel.queue.writeback import after_job
from zerolabel.stages import Timings

logger = logging.getLogger(__name__)

LOAD_THREADS = 8
"""The most downloads a worker runs at once."""

Computed = DiscoveryResult | Exception
"""A job's outcome as its batch computed it: its result, or why it failed."""


class BatchedJob(Job):
    """RQ's job, answering with the outcome its worker computed (the worker's job class).

    Attributes:
        computed: set by the worker before RQ performs the job: ``perform`` then returns this
            result (or raises this error) instead of calling the job's function.
        started: the worker put the job in RQ's started state when it claimed it.
    """

    computed: Computed | None = None
    started: bool = False

    def perform(self) -> Any:
        if self.computed is None:
            return super().perform()
        outcome, self.computed = self.computed, None
        if isinstance(outcome, Exception):
            raise outcome
        return outcome.to_dict()


def admit(job: BatchedJob) -> DiscoveryRequest | None:
    """The request of a discovery job to serve in a batch; None for a job RQ runs as it is:
    another function's, or one answered at once (``job.computed``: a request that does not parse,
    or that names what this version cannot serve, e.g. from a backend of another version)."""
    if not is_discovery(job):
        return None
    argument: Any = job.args[0] if len(job.args) == 1 else None
    try:
        return DiscoveryRequest.from_dict(argument)
    except ConfigError as exc:  # an error result, so RQ does not retry it
        job.computed = refused(argument, exc)
    except (DiscoveryError, LookupError, TypeError, ValueError) as exc:
        job.computed = exc
    return None


def refused(request: Any, exc: ConfigError) -> DiscoveryResult:
    """The error result for a request whose spec cannot be built here."""
    fields = request if isinstance(request, dict) else {}
    task_id = fields.get("task_id")
    logger.error("task %s: request refused: %s", task_id, exc)
    task = task_id if isinstance(task_id, int) else None
    return DiscoveryResult(str(fields.get("image", "")), (0, 0), [], "", task, str(exc))


@dataclass
class _Claimed:
    job: BatchedJob
    request: DiscoveryRequest
    execution: Execution
    loading: Future[tuple[Loaded, float]] | None = None
    claim_s: float = 0.0  # this job's share of claiming its batch


@dataclass(frozen=True)
class _Loads:
    outcomes: list[Loaded | Exception]
    load_s: float
    wait_s: float


class Batches:
    """Serves discovery jobs in batches for one worker.

    Args:
        worker: the RQ worker (its bookkeeping: executions, started state, ``perform_job``).
        beat: the worker's liveness record (every job is held from its claim to its finish).
        runs: strikes (a job with a strike is served alone).
        runtime: the process's runtime, built on first use.
        size: jobs per batch (B); None: by device, see :meth:`WorkerRuntime.worker_batch`.
        stop_requested: whether a stop was asked for (no further batch is claimed then).
    """

    def __init__(
        self,
        worker: BaseWorker,
        beat: Heartbeat,
        runs: Runs,
        runtime: Callable[[], WorkerRuntime],
        size: int | None,
        stop_requested: Callable[[], bool],
    ) -> None:
        self.worker = worker
        self.beat = beat
        self.runs = runs
        self._make_runtime = runtime
        self._runtime: WorkerRuntime | None = None
        self._size = size
        self._stop_requested = stop_requested
        self.stats = BatchStats()
        self.observers: list[BatchObserver] = [self.stats, record_queue_stages]
        self._pool: ThreadPoolExecutor | None = None
        self.between_steps: Callable[[], object] | None = None
        """Called before each batch step (the worker answers waiting prompts there)."""

    @property
    def runtime(self) -> WorkerRuntime:
        if self._runtime is None:
            self._runtime = self._make_runtime()
        return self._runtime

    @property
    def size(self) -> int:
        """Jobs per batch (B)."""
        if self._size is None:
            self._size = self.runtime.worker_batch()
        return self._size

    def serve(self, first: BatchedJob, request: DiscoveryRequest, queue: Queue) -> None:
        """Serve ``first`` and more waiting jobs of its spec, batch after batch, until no job of
        that spec is next in the queue (or a stop is requested).

        A job with a strike (a run of it died with its worker) is served alone.
        """
        start = time.perf_counter()
        if self.runs.strikes(first.id):
            self._run(*self._ready(self._start([(first, request)], start)), queue)
            return
        spec = request.spec
        claimer = Claimer(self.runs, self.beat, window=max(4 * self.size, 16))
        more = claimer.claim(queue, spec, self.size - 1)
        batch = self._start([(first, request), *more], start)
        while batch:
            ready = self._ready(batch)
            following: list[_Claimed] = []
            if not self._stop_requested():
                start = time.perf_counter()
                more = claimer.claim(queue, spec, self.size, only_if_next=True)
                following = self._start(more, start)
            self._step_aside()
            self._run(*ready, queue)
            batch = following

    def _step_aside(self) -> None:
        if self.between_steps is not None:
            self.between_steps()

    def close(self) -> None:
        """Stop the download threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # --- stages --------------------------------------------------------------------------------

    def _start(self, claims: list[tuple[Job, DiscoveryRequest]], since: float) -> list[_Claimed]:
        """RQ's started state for claimed jobs (held in the liveness record already), then their
        downloads begin.

        ``since``: when claiming them began; the time until their downloads start is shared
        among them as their claim time.
        """
        batch = []
        for job, request in claims:
            assert isinstance(job, BatchedJob), "the worker's job class is BatchedJob"
            batch.append(_Claimed(job, request, self._begin(job)))
        pool = self._threads()
        for claimed in batch:
            claimed.loading = pool.submit(self._load, claimed.request)
        if batch:
            share = (time.perf_counter() - since) / len(batch)
            for claimed in batch:
                claimed.claim_s = share
        return batch

    def _begin(self, job: BatchedJob) -> Execution:
        """Put a claimed job in RQ's started state, as RQ does the one it dequeues."""
        execution = self.worker.prepare_execution(job)
        # claims put the job in the intermediate queue whatever queues RQ's own dequeue serves
        self.worker.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started = True
        return execution

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            workers = max(1, min(LOAD_THREADS, self.size))
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="zerolabel-load")
        return self._pool

    def _load(self, request: DiscoveryRequest) -> tuple[Loaded, float]:
        start = time.perf_counter()
        loaded = self.runtime.load(request)
        return loaded, time.perf_counter() - start

    def _ready(self, batch: list[_Claimed]) -> tuple[list[_Claimed], _Loads]:
        """The batch once its downloads are done: each job's loaded image (or why it has none),
        the seconds its loads took (summed) and how long this waited for them."""
        start = time.perf_counter()
        outcomes: list[Loaded | Exception] = []
        load_s = 0.0
        for claimed in batch:
            if claimed.loading is None:
                raise ValueError(f"job {claimed.job.id} was never loaded")
            try:
                loaded, seconds = claimed.loading.result()
            except Exception as exc:  # the job's own failure: RQ handles it for that job only
                outcomes.append(exc)
                continue
            load_s += seconds
            outcomes.append(loaded)
        return batch, _Loads(outcomes, load_s, time.perf_counter() - start)

    def _run(self, batch: list[_Claimed], loads: _Loads, queue: Queue) -> None:
        compute: list[tuple[_Claimed, Loaded]] = []
        for claimed, outcome in zip(batch, loads.outcomes, strict=True):
            if isinstance(outcome, Exception):
                claimed.job.computed = outcome
            elif outcome.result is not None:
                claimed.job.computed = outcome.result
            else:
                compute.append((claimed, outcome))
        stages = Timings()
        start = time.perf_counter()
        for (claimed, _), result in zip(compute, self._compute(compute, stages), strict=True):
            claimed.job.computed = result
        run_s = time.perf_counter() - start
        start = time.perf_counter()
        for claimed in batch:
            self._finish(claimed, queue)
        self._report(
            BatchReport(
                size=len(batch),
                model_version=batch[0].request.spec.model_version(),
                computed=len(compute),
                claim_s=sum(claimed.claim_s for claimed in batch),
                load_s=loads.load_s,
                wait_s=loads.wait_s,
                run_s=run_s,
                stages=stages,
                finish_s=time.perf_counter() - start,
            )
        )

    def _compute(self, compute: list[tuple[_Claimed, Loaded]], stages: Timings) -> list[Computed]:
        """The batched run, under the longest RQ job timeout of its jobs."""
        if not compute:
            return []
        jobs = [claimed.job for claimed, _ in compute]
        timeout = max(job.timeout or self.worker.queue_class.DEFAULT_TIMEOUT for job in jobs)
        spec = compute[0][0].request.spec
        loaded = [item for _, item in compute]
        try:
            with self.worker.death_penalty_class(timeout, JobTimeoutException, job_id=jobs[0].id):
                return self.runtime.compute(spec, loaded, stages)
        except JobTimeoutException as exc:
            return [exc for _ in compute]

    def _finish(self, claimed: _Claimed, queue: Queue) -> None:
        job = claimed.job
        redis = self.runtime.redis
        if isinstance(job.computed, DiscoveryResult) and redis is not None:
            after_job(redis, self.runtime.settings, job.id, job.computed)  # late tasks get it
        self.worker.perform_job(job, queue, claimed.execution)
        self.beat.release(job.id)

    def _report(self, report: BatchReport) -> None:
        logger.info(
            "batch of %d jobs for %s: %d computed, waited %.2f s for downloads, ran %.2f s",
            report.size,
            report.model_version,
            report.computed,
            report.wait_s,
            report.run_s,
        )
        for observer in self.observers:
            try:
                observer(report)
            except Exception:  # a metrics hook never stops the worker
                logger.exception("batch observer %r failed", observer)
