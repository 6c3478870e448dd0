"""Batched discovery jobs: one job per image, many jobs per forward pass.

Each RQ job still carries one image and spec (job id = ``DiscoveryRequest.job_id``). A worker
serves a discovery job it dequeues like this:

1. **Claim.** It takes up to B-1 more waiting jobs of the same spec from its queue
   (:mod:`zerolabel.queue.claims`) and moves each into RQ's started state with the bookkeeping
   RQ does for the one it dequeued (an execution in the StartedJobRegistry with its TTL, the
   job's status, worker name and heartbeat), and takes every job's lease
   (:mod:`zerolabel.queue.held`). A worker killed now leaves started jobs whose lease lapses:
   the backend queues them again, with no strike (nothing ran yet).
2. **Load.** A small thread pool downloads and decodes the images and looks up the result
   cache, one task per job (:meth:`WorkerRuntime.load`).
3. **Prefetch.** When the batch's images are loaded the worker claims the next batch of the same
   spec (only when a job of that spec is next in the queue, so another spec at the head is not
   kept waiting) and starts loading it, then runs the current batch: the downloads of batch n+1
   overlap the forward pass of batch n.
4. **Run.** Each job's run is recorded (strikes and the quarantine work per job, as for a single
   job) and the images still to compute go through one batched run
   (:meth:`WorkerRuntime.compute`: images of the same padded size share forward passes of up to
   ``ZEROLABEL_BATCH_SIZE``), under RQ's job timeout.
5. **Finish.** Each job then goes through RQ's own ``perform_job`` with its function
   ``zerolabel.queue.jobs.discover`` answering from the outcome computed for it
   (:mod:`zerolabel.queue.answers`): results, failures, exception handlers, transient-only
   retries and registries are RQ's single-job paths, so one bad image fails only its own job.

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
from typing import TYPE_CHECKING

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.timeouts import JobTimeoutException

from zerolabel.contract import DiscoveryRequest, DiscoveryResult
from zerolabel.queue.answers import Answer, answering
from zerolabel.queue.batch_report import (
    BatchObserver,
    BatchReport,
    BatchStats,
    record_queue_stages,
)
from zerolabel.queue.claims import Claimer, request_of
from zerolabel.queue.held import HeldLeases
from zerolabel.queue.leases import QuarantinedJobError
from zerolabel.queue.writeback import after_job

if TYPE_CHECKING:
    from zerolabel.queue.runtime import Loaded, WorkerRuntime
    from zerolabel.queue.worker import ZerolabelWorker

logger = logging.getLogger(__name__)

LOAD_THREADS = 8
"""The most downloads a worker runs at once."""


@dataclass
class _Claimed:
    job: Job
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
        worker: the worker (RQ's bookkeeping for claimed jobs, run records).
        runtime: the process's runtime, built on first use.
        size: jobs per batch (B); None: by device, see :meth:`WorkerRuntime.worker_batch`.
        lease_s: the jobs' lease TTL.
    """

    def __init__(
        self,
        worker: ZerolabelWorker,
        runtime: Callable[[], WorkerRuntime],
        size: int | None,
        lease_s: int,
    ) -> None:
        self.worker = worker
        self._make_runtime = runtime
        self._runtime: WorkerRuntime | None = None
        self._size = size
        self.leases = HeldLeases(worker.connection, lease_s)
        self.stats = BatchStats()
        self.observers: list[BatchObserver] = [self.stats, record_queue_stages]
        self.taken: set[str] = set()  # jobs claimed (or being claimed) and not finished
        self._pool: ThreadPoolExecutor | None = None

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

    def accepts(self, job: Job) -> DiscoveryRequest | None:
        """The request of a discovery job (served here); None for a job of another function or
        a request that does not parse (RQ runs it alone)."""
        return request_of(job)

    def serve(self, first: Job, request: DiscoveryRequest, queue: Queue) -> None:
        """Serve ``first`` and more waiting jobs of its spec, batch after batch, until no job of
        that spec is next in the queue (or a stop is requested).

        A job with a strike (a run of it died with its worker) is served alone.
        """
        self.taken.add(first.id)
        start = time.perf_counter()
        if self.worker.runs.settle(first.id):
            self._run(*self._ready(self._start([(first, request)], start)), queue)
            return
        spec = request.spec
        claimer = Claimer(self.worker.runs, window=max(4 * self.size, 16))
        more = claimer.claim(queue, spec, self.size - 1, taken=self.taken)
        batch = self._start([(first, request), *more], start)
        while batch:
            ready = self._ready(batch)
            following: list[_Claimed] = []
            if not self.worker.stop_requested:
                start = time.perf_counter()
                more = claimer.claim(queue, spec, self.size, taken=self.taken, only_if_next=True)
                following = self._start(more, start)
            self._run(*ready, queue)
            batch = following

    def abandon(self) -> list[str]:
        """Forget the jobs taken and not finished (a Redis outage, an error): their leases are
        released; returns their ids."""
        abandoned = list(self.taken)
        for job_id in abandoned:
            self.leases.release(job_id)
        self.taken.clear()
        return abandoned

    def close(self) -> None:
        """Stop the download threads and release every lease still held."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.leases.close()

    # --- stages --------------------------------------------------------------------------------

    def _start(self, claims: list[tuple[Job, DiscoveryRequest]], since: float) -> list[_Claimed]:
        """Leases and RQ's started state for claimed jobs, then their downloads begin.

        ``since``: when claiming them began; the time until their downloads start is shared
        among them as their claim time.
        """
        self.leases.hold(job.id for job, _ in claims)
        batch = [_Claimed(job, req, self.worker.start_claimed(job)) for job, req in claims]
        pool = self._threads()
        for claimed in batch:
            claimed.loading = pool.submit(self._load, claimed.request)
        if batch:
            share = (time.perf_counter() - since) / len(batch)
            for claimed in batch:
                claimed.claim_s = share
        return batch

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
        answers: dict[str, Answer] = {}
        compute: list[tuple[_Claimed, Loaded]] = []
        for claimed, outcome in zip(batch, loads.outcomes, strict=True):
            job_id = claimed.job.id
            try:
                self.worker.runs.begin(job_id, self.worker.record)
            except QuarantinedJobError as exc:
                answers[job_id] = Answer(job_id, error=exc)
                continue
            if isinstance(outcome, Exception):
                answers[job_id] = Answer(job_id, error=outcome)
            elif outcome.result is not None:
                answers[job_id] = Answer(job_id, result=outcome.result)
            else:
                compute.append((claimed, outcome))
        before = _stage_seconds(self.runtime)
        start = time.perf_counter()
        for (claimed, _), result in zip(compute, self._compute(compute), strict=True):
            job_id = claimed.job.id
            if isinstance(result, Exception):
                answers[job_id] = Answer(job_id, error=result)
            else:
                answers[job_id] = Answer(job_id, result=result)
        run_s = time.perf_counter() - start
        after = _stage_seconds(self.runtime)
        start = time.perf_counter()
        for claimed in batch:
            self._finish(claimed, queue, answers[claimed.job.id])
        preprocess_s, forward_s, method_s = (b - a for a, b in zip(before, after, strict=True))
        self._report(
            BatchReport(
                size=len(batch),
                model_version=batch[0].request.spec.model_version(),
                computed=len(compute),
                claim_s=sum(claimed.claim_s for claimed in batch),
                load_s=loads.load_s,
                wait_s=loads.wait_s,
                run_s=run_s,
                preprocess_s=preprocess_s,
                forward_s=forward_s,
                method_s=method_s,
                finish_s=time.perf_counter() - start,
            )
        )

    def _compute(self, compute: list[tuple[_Claimed, Loaded]]) -> list[DiscoveryResult | Exception]:
        """The batched run, under the longest RQ job timeout of its jobs."""
        if not compute:
            return []
        jobs = [claimed.job for claimed, _ in compute]
        timeout = max(job.timeout or self.worker.queue_class.DEFAULT_TIMEOUT for job in jobs)
        spec = compute[0][0].request.spec
        try:
            with self.worker.death_penalty_class(timeout, JobTimeoutException, job_id=jobs[0].id):
                return self.runtime.compute(spec, [loaded for _, loaded in compute])
        except JobTimeoutException as exc:
            return [exc for _ in compute]

    def _finish(self, claimed: _Claimed, queue: Queue, answer: Answer) -> None:
        redis = self.runtime.redis
        if answer.result is not None and redis is not None:  # late tasks get it written now
            after_job(redis, self.runtime.settings, claimed.job.id, answer.result)
        with answering(answer):
            self.worker.finish_claimed(claimed.job, queue, claimed.execution)
        self.leases.release(claimed.job.id)
        self.taken.discard(claimed.job.id)

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


def _stage_seconds(runtime: WorkerRuntime) -> tuple[float, float, float]:
    timings = runtime.timings
    return timings.preprocess_s, timings.forward_s, timings.method_s
