"""Batched workers on fakeredis, in this process: claims, prefetch, per-job outcomes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fakeredis
import numpy as np
import pytest
from PIL import Image
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from zerolabel.contract import Box, DiscoveryRequest, DiscoverySpec, Region
from zerolabel.io.images import LoadedImage
from zerolabel.queue.batch_report import QUEUE_STAGES, BatchReport
from zerolabel.queue.dispatch import Dispatcher, Outcome
from zerolabel.queue.heartbeat import beat_of
from zerolabel.queue.runtime import Loaded, WorkerRuntime
from zerolabel.queue.worker import ZerolabelWorker, run_worker
from zerolabel.settings import QueueSettings, WorkerSettings
from zerolabel.stages import Timings

QUEUE = QueueSettings(queue="zerolabel", lease_s=5, retries=2)


class SizeRunner:
    """Stands in for a model: one region covering the whole image; remembers every run."""

    def __init__(self, spec: DiscoverySpec, calls: list[tuple[str, list[str]]]) -> None:
        self.spec = spec
        self.model_version = spec.model_version()
        self.max_side = spec.effective_max_side()
        self.timings = Timings()
        self.calls = calls

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        self.calls.append((self.spec.method, [Path(image.source).name for image in images]))
        self.timings.images += len(images)
        return [[Region(Box(0, 0, *i.original_hw[::-1]), 1.0, self.spec.method)] for i in images]


class Stack:
    """A fakeredis queue, a runtime whose model is :class:`SizeRunner`, and image files."""

    def __init__(self, folder: Path, batch: int) -> None:
        self.folder = folder
        self.server = fakeredis.FakeServer()
        self.redis = fakeredis.FakeRedis(server=self.server)
        self.settings = WorkerSettings(local_roots=(str(folder),), worker_batch=batch, queue=QUEUE)
        self.runtime = WorkerRuntime(self.settings, self.redis)
        self.calls: list[tuple[str, list[str]]] = []
        self.runtime.runner = lambda spec: SizeRunner(spec, self.calls)  # type: ignore[method-assign]
        self.dispatcher = Dispatcher(self.redis, QUEUE)

    def image(self, name: str, width: int, height: int = 6) -> str:
        pixels = np.random.default_rng(width).integers(0, 255, (height, width, 3), np.uint8)
        Image.fromarray(pixels).save(self.folder / name)
        return str(self.folder / name)

    def requests(self, count: int, spec: DiscoverySpec | None = None) -> list[DiscoveryRequest]:
        spec = spec or self.settings.spec()
        return [
            DiscoveryRequest(spec, self.image(f"{spec.method}-{n:02d}.png", 8 + n), n)
            for n in range(count)
        ]

    def work(self, **kwargs: Any) -> ZerolabelWorker:
        return run_worker(
            self.redis,
            QUEUE,
            name="w1",
            burst=True,
            with_scheduler=False,
            runtime=self.runtime,
            **kwargs,
        )

    def outcomes(self, requests: list[DiscoveryRequest]) -> list[Outcome]:
        """What each job ended with (not asking again, which would queue a failed one anew)."""
        jobs = [self.job(request) for request in requests]
        return self.dispatcher.collect(jobs, timeout_s=0)

    def job(self, request: DiscoveryRequest) -> Job:
        return Job.fetch(request.job_id, connection=self.redis, serializer=JSONSerializer)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path, batch=4)


def _widths(outcomes: list[Outcome]) -> list[int]:
    return [int(o.result.regions[0].box.x1) if o.result else -1 for o in outcomes]


def test_waiting_jobs_of_one_spec_run_in_batches_of_at_most_b(stack):
    requests = stack.requests(10)
    for request in requests:
        stack.dispatcher.submit(request)
    worker = stack.work()
    assert worker.batches.stats.batch_sizes == [4, 4, 2]
    assert [len(names) for _, names in stack.calls] == [4, 4, 2]  # one run per batch
    outcomes = stack.outcomes(requests)
    assert _widths(outcomes) == [8 + n for n in range(10)]  # each job got its own image's result
    assert [o.result.task_id for o in outcomes if o.result] == list(range(10))


def test_jobs_of_two_specs_never_share_a_batch(stack):
    lost = stack.requests(5)
    tokencut = stack.requests(5, stack.settings.spec(method="tokencut"))
    for a, b in zip(lost, tokencut, strict=True):  # interleaved in the queue
        stack.dispatcher.submit(a)
        stack.dispatcher.submit(b)
    worker = stack.work()
    assert sum(worker.batches.stats.batch_sizes) == 10
    for method, names in stack.calls:
        assert {name.split("-")[0] for name in names} == {method}
    for requests in (lost, tokencut):
        outcomes = stack.outcomes(requests)
        versions = {o.result.model_version for o in outcomes if o.result}
        assert versions == {requests[0].spec.model_version()}
        assert _widths(outcomes) == [8 + n for n in range(5)]


def test_an_unreadable_image_fails_only_its_own_job(stack, monkeypatch):
    requests = stack.requests(4)
    (stack.folder / "lost-01.png").write_bytes(b"not an image at all")
    broken = stack.runtime.load

    def load(request: DiscoveryRequest) -> Loaded:
        if request.image.endswith("lost-02.png"):
            raise ValueError("the fetcher tripped over lost-02.png")
        return broken(request)

    monkeypatch.setattr(stack.runtime, "load", load)
    for request in requests:
        stack.dispatcher.submit(request)
    worker = stack.work()
    assert worker.batches.stats.batch_sizes == [4]
    first, unreadable, failed, last = stack.outcomes(requests)
    assert first.result and first.result.regions and last.result and last.result.regions
    assert unreadable.result and not unreadable.result.regions
    assert unreadable.result.error and "lost-01.png" in unreadable.result.error
    assert failed.reason == "failed: ValueError: the fetcher tripped over lost-02.png"
    assert stack.calls == [("lost", ["lost-00.png", "lost-03.png"])]


def test_a_batch_whose_run_fails_runs_its_images_alone(stack):
    requests = stack.requests(4)

    class Poisoned(SizeRunner):
        def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
            if any(image.source.endswith("lost-02.png") for image in images):
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return super().run(images, batch_size)

    stack.runtime.runner = lambda spec: Poisoned(spec, stack.calls)  # type: ignore[method-assign]
    for request in requests:
        stack.dispatcher.submit(request)
    stack.work()
    outcomes = stack.outcomes(requests)
    assert _widths(outcomes) == [8, 9, -1, 11]
    assert outcomes[2].reason == (
        "failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    )


def test_the_next_batch_downloads_while_this_one_runs(stack, monkeypatch):
    requests = stack.requests(6)  # B = 4: batches of jobs 0-3 and 4-5
    events: list[str] = []
    second_batch_loading = threading.Event()  # set once both of its downloads have started
    started: set[int | None] = set()
    lock = threading.Lock()
    load = stack.runtime.load

    def recording_load(request: DiscoveryRequest) -> Loaded:
        with lock:
            events.append(f"load {request.task_id}")
            started.add(request.task_id)
            if {4, 5} <= started:
                second_batch_loading.set()
        return load(request)

    class Slow(SizeRunner):
        def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
            events.append(f"run {len(images)} starts")
            if len(images) == 4:  # the first batch runs until the second one is downloading
                second_batch_loading.wait(timeout=30)
            events.append(f"run {len(images)} ends")
            return super().run(images, batch_size)

    monkeypatch.setattr(stack.runtime, "load", recording_load)
    stack.runtime.runner = lambda spec: Slow(spec, stack.calls)  # type: ignore[method-assign]
    for request in requests:
        stack.dispatcher.submit(request)
    stack.work()
    first_run = events.index("run 4 starts")
    assert {"load 0", "load 1", "load 2", "load 3"} <= set(events[:first_run])
    assert events.index("load 4") < events.index("run 4 ends")  # overlapping the first run
    assert events.index("load 5") < events.index("run 4 ends")
    assert events.index("run 4 ends") < events.index("run 2 starts")
    assert _widths(stack.outcomes(requests)) == [8 + n for n in range(6)]


def test_claimed_jobs_are_started_and_held_by_the_workers_record(stack):
    requests = stack.requests(6)
    seen: dict[str, list[Any]] = {}

    class Inspecting(SizeRunner):
        def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
            if not seen:
                record = beat_of(stack.redis, "w1")
                for request in requests:
                    job = stack.job(request)
                    seen[request.image[-6:-4]] = [
                        job.get_status(refresh=True),
                        record is not None and job.id in record.jobs,
                        job.id in stack.dispatcher.queue.started_job_registry,
                    ]
            return super().run(images, batch_size)

    stack.runtime.runner = lambda spec: Inspecting(spec, stack.calls)  # type: ignore[method-assign]
    for request in requests:
        stack.dispatcher.submit(request)
    worker = stack.work()
    held = [JobStatus.STARTED, True, True]  # running (00-03), or claimed and downloading (04-05)
    assert seen == {name: held for name in ("00", "01", "02", "03", "04", "05")}
    assert worker.beat.held == []  # every job released once RQ had its result
    assert not stack.dispatcher.queue.started_job_registry.get_job_ids()


def test_a_redis_outage_mid_batch_queues_every_unfinished_job_again(stack, caplog):
    requests = stack.requests(6)  # B = 4: jobs 0-3 run when Redis goes, 4-5 are prefetched

    class Cut(SizeRunner):
        def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
            if not stack.calls:
                stack.server.connected = False
                threading.Timer(1.0, setattr, (stack.server, "connected", True)).start()
            return super().run(images, batch_size)

    stack.runtime.runner = lambda spec: Cut(spec, stack.calls)  # type: ignore[method-assign]
    for request in requests:
        stack.dispatcher.submit(request)
    with caplog.at_level("WARNING", logger="zerolabel.queue.worker"):
        stack.work()
    requeued = [r.message for r in caplog.records if "cut short by the Redis outage" in r.message]
    assert len(requeued) == 6  # the four that ran and the two being downloaded
    assert stack.calls[0] == ("lost", ["lost-00.png", "lost-01.png", "lost-02.png", "lost-03.png"])
    assert sum(len(names) for _, names in stack.calls[1:]) == 6  # each served again, once
    assert _widths(stack.outcomes(requests)) == [8 + n for n in range(6)]
    assert not stack.redis.keys("zerolabel:lease:*") and not stack.redis.keys("zerolabel:run:*")


def test_a_redis_outage_while_results_are_written_queues_the_rest_again(stack, monkeypatch):
    requests = stack.requests(6)
    jobs = [stack.dispatcher.submit(request) for request in requests]
    perform = ZerolabelWorker.perform_job
    cut: list[str] = []

    def perform_job(self: ZerolabelWorker, job: Job, *args: Any) -> bool:
        if job.id == jobs[1].id and not cut:  # the first job's result is written, then Redis goes
            cut.append(job.id)
            stack.server.connected = False
            threading.Timer(1.0, setattr, (stack.server, "connected", True)).start()
        return perform(self, job, *args)

    monkeypatch.setattr(ZerolabelWorker, "perform_job", perform_job)
    stack.work()
    assert cut == [jobs[1].id]
    assert [job.get_status(refresh=True) for job in jobs] == [JobStatus.FINISHED] * 6
    assert _widths(stack.outcomes(requests)) == [8 + n for n in range(6)]
    assert not stack.redis.keys("zerolabel:lease:*") and not stack.redis.keys("zerolabel:run:*")


def test_a_job_with_a_strike_runs_alone(stack):
    requests = stack.requests(5)
    jobs = [stack.dispatcher.submit(request) for request in requests]
    stack.redis.sadd(f"zerolabel:strikes:{jobs[1].id}", "w0 2020-01-01T00:00:00")  # a dead run
    worker = stack.work()
    assert sorted(worker.batches.stats.batch_sizes) == [1, 4]
    assert ("lost", ["lost-01.png"]) in stack.calls
    assert all(len(names) == 1 or "lost-01.png" not in names for _, names in stack.calls)
    assert _widths(stack.outcomes(requests)) == [8 + n for n in range(5)]


def test_observers_get_every_batch_and_a_failing_one_stops_nothing(stack):
    requests = stack.requests(5)
    for request in requests:
        stack.dispatcher.submit(request)
    reports: list[BatchReport] = []

    def broken(report: BatchReport) -> None:
        raise RuntimeError("metrics down")

    stack.work(observers=[broken, reports.append])
    assert [r.size for r in reports] == [4, 1] and [r.computed for r in reports] == [4, 1]
    assert all(r.model_version == requests[0].spec.model_version() for r in reports)
    assert all(r.load_s >= 0 and r.wait_s >= 0 and r.run_s >= 0 for r in reports)
    assert all(r.claim_s > 0 and r.finish_s > 0 for r in reports)  # Redis round trips


def _stage(stage: str) -> tuple[float, float]:
    """Observations and seconds of one stage in the process's metrics."""
    from prometheus_client import REGISTRY

    count = REGISTRY.get_sample_value("zerolabel_worker_stage_seconds_count", {"stage": stage})
    total = REGISTRY.get_sample_value("zerolabel_worker_stage_seconds_sum", {"stage": stage})
    return count or 0.0, total or 0.0


def test_claim_wait_and_finish_are_stages_observed_once_per_job(stack):
    requests = stack.requests(5)
    for request in requests:
        stack.dispatcher.submit(request)
    before = {stage: _stage(stage) for stage in QUEUE_STAGES}
    reports: list[BatchReport] = []
    stack.work(observers=[reports.append])
    for stage in QUEUE_STAGES:
        count, total = _stage(stage)
        assert count - before[stage][0] == 5  # one observation per job, batches of 4 and 1
        spent = sum(getattr(report, f"{stage}_s") for report in reports)
        assert total - before[stage][1] == pytest.approx(spent)


def test_worker_batch_size_by_setting_and_device():
    assert WorkerRuntime(WorkerSettings(device="cpu")).worker_batch() == 1
    assert WorkerRuntime(WorkerSettings(device="cpu", worker_batch=7)).worker_batch() == 7
    assert WorkerSettings.from_env({"ZEROLABEL_WORKER_BATCH": "12"}).worker_batch == 12
    with pytest.raises(Exception, match="ZEROLABEL_WORKER_BATCH='0' must be >= 1"):
        WorkerSettings.from_env({"ZEROLABEL_WORKER_BATCH": "0"})


def test_a_prompt_queued_during_a_batch_is_answered_before_the_next_batch_step(stack):
    from zerolabel.contract import Click, DiscoveryResult, Prompt, PromptRequest
    from zerolabel.queue.interactive import make_interactive_queue, submit

    requests = stack.requests(8)
    for request in requests:
        stack.dispatcher.submit(request)
    order: list[str] = []
    prompts = make_interactive_queue(stack.redis, QUEUE)
    clicked = PromptRequest(requests[0], Prompt((Click(0.5, 0.5),)))

    class Clicking(SizeRunner):
        def run(self, images, batch_size=8):
            order.append("batch")
            if len(order) == 1:  # an annotator clicks while the first batch runs
                submit(prompts, clicked, 30)
            return super().run(images, batch_size)

    stack.runtime.runner = lambda spec: Clicking(spec, stack.calls)  # type: ignore[method-assign]

    def prompt(asked: PromptRequest) -> DiscoveryResult:
        order.append("prompt")
        return DiscoveryResult(asked.request.image, (6, 8), [], "v", asked.request.task_id)

    stack.runtime.prompt = prompt  # type: ignore[method-assign]
    stack.work()
    assert order == ["batch", "prompt", "batch"]  # batches of 4: the click waited one step
    job = Job.fetch(clicked.job_id, connection=stack.redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED and job.return_value()["task_id"] == 0
