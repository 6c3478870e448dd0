"""Per-batch numbers of a batching worker, for metrics.

What it adds to RQ: RQ records when each job started and ended; a batch's jobs share their
claim, their wait for downloads and one batched run, which only these numbers tell apart.
Every batch a worker serves is reported to the observers of its
:class:`~zerolabel.queue.batch.Batches` (``ZerolabelWorker.batches.observers``, or
``run_worker(observers=...)``) as a :class:`BatchReport`; :class:`BatchStats`, always among
them, keeps the batch sizes and the seconds per stage for the worker's lifetime, and
:func:`record_queue_stages`, also always among them, puts the batch's queue stages into the
worker's stage metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from zerolabel import metrics
from zerolabel.stages import Timings

QUEUE_STAGES = ("claim", "wait", "finish")
"""The worker's time per image outside the model and outside the download threads: claiming
jobs, the device waiting for downloads, and writing results back through RQ."""


@dataclass(frozen=True)
class BatchReport:
    """One batch, for metrics (see :attr:`Batches.observers`).

    Attributes:
        size: jobs in the batch.
        model_version: the batch's spec.
        computed: images that went through the forward pass (the others were answered from the
            result cache, or could not be read).
        claim_s: taking the jobs off the queue into RQ's started state
            (Redis round trips; the first job's dequeue by RQ itself is not counted).
        load_s: download, decode and cache lookup, summed over the jobs (they overlap).
        wait_s: how long the device waited for the batch's downloads (0 when prefetch kept up).
        run_s: the batched run (preprocess, forward passes, method, refinement).
        stages: that run by stage, as the pipeline records it.
        finish_s: writing the jobs' results and states back through RQ.
    """

    size: int
    model_version: str
    computed: int
    claim_s: float
    load_s: float
    wait_s: float
    run_s: float
    stages: Timings
    finish_s: float

    def seconds(self) -> dict[str, float]:
        """Seconds by stage: the queue's own, the loads and the run, then the run's stages."""
        queue = {
            "claim": self.claim_s,
            "load": self.load_s,
            "wait": self.wait_s,
            "run": self.run_s,
            "finish": self.finish_s,
        }
        run = {
            item.name.removesuffix("_s"): float(getattr(self.stages, item.name))
            for item in dataclasses.fields(self.stages)
            if item.name.endswith("_s")
        }
        return queue | run


@dataclass
class BatchStats:
    """Every batch of a worker: its sizes and the seconds per stage, summed."""

    batch_sizes: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, report: BatchReport) -> None:
        self.batch_sizes.append(report.size)
        for stage, value in report.seconds().items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value


def record_queue_stages(report: BatchReport) -> None:
    """The batch's :data:`QUEUE_STAGES` seconds, shared among its jobs, into the stage metrics
    (``zerolabel_worker_stage_seconds{stage="claim"|"wait"|"finish"}``)."""
    seconds = report.seconds()
    for stage in QUEUE_STAGES:
        metrics.observe_stage(stage, seconds[stage], report.size)


BatchObserver = Callable[[BatchReport], None]
