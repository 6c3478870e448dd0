"""Late tasks get their prediction written to Label Studio exactly once (fakeredis, fake LS)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from zerolabel import metrics
from zerolabel.contract import Box, DiscoveryRequest, Region
from zerolabel.io.images import LoadedImage
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue import jobs
from zerolabel.queue.dispatch import make_queue
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.queue.service import PENDING, WRITTEN, PredictionService, ProjectContext
from zerolabel.queue.worker import run_worker
from zerolabel.queue.writeback import RETRY_S, WriteBack, after_job
from zerolabel.settings import BackendSettings, WorkerSettings
from zerolabel.sites import LabelStudioSites
from zerolabel_backend.app import create_app

from tests.ls_fake import FakeLabelStudio, fake_label_studios, png
from tests.servers import redis_contents

KEY = "f0e1d2c3b4a5968778695a4b3c2d1e0f00112233"  # the workers' LABEL_STUDIO_API_KEY
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>
</View>"""
IMAGE = "/data/upload/1/a.png"
PROJECT = 3  # the project Label Studio's /setup and /predict name ("3.1")


class SizeRunner:
    """Stands in for a model: one region covering the whole image."""

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        return [[Region(Box(0, 0, *i.original_hw[::-1]), 0.75, "lost")] for i in images]


@dataclass
class Stack:
    ls: FakeLabelStudio
    redis: Any
    service: PredictionService
    runtime: WorkerRuntime
    context: ProjectContext

    @property
    def version(self) -> str:
        return self.service.model_version(CONFIG, ProjectOptions())

    def ask(self, ids: Sequence[int], image: str = IMAGE) -> list[Any]:
        """Label Studio's /predict for these tasks (all on one image)."""
        tasks = [{"id": i, "data": {"image": image}} for i in ids]
        for i in ids:
            self.ls.tasks.setdefault(i, {"image": image})  # the tasks Label Studio holds
        return self.service.answer(tasks, CONFIG, self.context)

    def run_jobs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run every queued job in this process, as a worker would."""
        monkeypatch.setattr(jobs, "get_runtime", lambda: self.runtime)
        run_worker(self.redis, self.runtime.settings.queue, burst=True, with_scheduler=False)

    def writer(self, later_s: float = 0.0) -> WriteBack:
        """Another worker's write-back, its clock ``later_s`` ahead."""
        sites = self.runtime.settings.ls_sites()
        return WriteBack(self.redis, sites, KEY, clock=lambda: time.time() + later_s)

    def posts(self) -> int:
        return sum(1 for method, path, _ in self.ls.seen if method == "POST")


@pytest.fixture
def ls() -> Iterator[FakeLabelStudio]:
    with fake_label_studios(KEY) as start:
        server = start()
        server.images[IMAGE] = png((8, 6))
        server.tasks[1] = {"image": IMAGE}
        server.project = PROJECT  # every task's project unless a test says otherwise
        yield server


@pytest.fixture
def stack(ls: FakeLabelStudio) -> Stack:
    redis = fakeredis.FakeRedis()
    env = {"LABEL_STUDIO_URL": ls.url, "ZEROLABEL_WAIT_TIMEOUT_S": "0.05"}
    service = PredictionService(BackendSettings.from_env(env), redis)
    runtime = WorkerRuntime(WorkerSettings.from_env({**env, "LABEL_STUDIO_API_KEY": KEY}), redis)
    runtime.runner = lambda spec: SizeRunner()  # type: ignore[method-assign]
    context = service.context(ls.url, ProjectOptions(), PROJECT)
    return Stack(ls, redis, service, runtime, context)


def test_a_late_task_is_answered_with_no_entry_and_written_once_its_job_finishes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    client = create_app(stack.service).test_client()
    setup = {"project": "3.1", "schema": CONFIG, "hostname": stack.ls.url, "access_token": "t"}
    version = client.post("/setup", json=setup).get_json()["model_version"]
    tasks = [{"id": 1, "data": {"image": IMAGE}}]
    reply = client.post("/predict", json={"tasks": tasks, "project": "3.1", "label_config": CONFIG})
    body = reply.get_json()
    assert body["results"] == [[]]  # Label Studio stores nothing and logs no error
    assert body["skipped"] == [{"index": 0, "task": 1, "reason": PENDING, "pending": True}]
    assert stack.ls.predictions == []
    counted = metrics.metrics().writebacks.labels("written")
    before = counted._value.get()
    stack.run_jobs(monkeypatch)
    (written,) = stack.ls.predictions
    assert written["task"] == 1 and written["model_version"] == version
    assert counted._value.get() == before + 1  # the worker's write-back counter
    assert written["score"] == 0.75 and written["result"][0]["original_width"] == 8
    assert stack.redis.keys("zerolabel:waiting:*") == []
    # Label Studio selected the task before the post landed and asks again: not answered twice.
    again = client.post("/predict", json={"tasks": tasks, "project": "3.1", "label_config": CONFIG})
    assert again.get_json()["results"] == [[]]
    assert again.get_json()["skipped"][0]["reason"] == WRITTEN
    assert stack.ls.per_task() == {1: 1} and stack.posts() == 1


def test_tasks_sharing_one_image_are_one_job_and_each_gets_one_prediction(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    answers = stack.ask([1, 2, 3])
    assert [a.pending for a in answers] == [True, True, True]
    assert len(make_queue(stack.redis, stack.runtime.settings.queue).jobs) == 1
    stack.run_jobs(monkeypatch)
    assert stack.ls.per_task() == {1: 1, 2: 1, 3: 1}
    assert {p["model_version"] for p in stack.ls.predictions} == {stack.version}


def test_asking_again_after_a_failed_write_is_answered_and_the_retry_posts_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.ls.post_faults.append(503)
    stack.ask([1])
    stack.run_jobs(monkeypatch)
    assert stack.ls.predictions == [] and stack.posts() == 1  # Label Studio was unavailable
    (answer,) = stack.ask([1])  # the user clicks Retrieve Predictions: /predict answers it
    assert answer.prediction is not None and answer.prediction["model_version"] == stack.version
    assert stack.writer(later_s=RETRY_S + 1).retry_due() == 0
    assert stack.posts() == 1 and stack.redis.zcard("zerolabel:writeback:due") == 0


def test_a_post_whose_reply_was_lost_is_not_posted_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.ls.post_faults.append("lost")  # stored, but the connection closes without a reply
    stack.ask([1])
    stack.run_jobs(monkeypatch)
    assert stack.ls.per_task() == {1: 1}
    assert stack.writer().retry_due() == 0  # not due yet
    assert stack.writer(later_s=RETRY_S + 1).retry_due() == 0  # due: Label Studio has it
    assert stack.ls.per_task() == {1: 1} and stack.posts() == 1
    assert stack.redis.keys("zerolabel:waiting:*") == []


def test_a_transient_failure_is_written_by_the_retry(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    stack.ls.post_faults.append(502)
    stack.ask([1])
    stack.run_jobs(monkeypatch)
    assert stack.ls.predictions == []
    assert stack.writer(later_s=RETRY_S + 1).retry_due() == 1
    assert stack.ls.per_task() == {1: 1} and stack.posts() == 2


def test_two_workers_finishing_the_same_job_write_one_prediction(stack: Stack):
    stack.ask([1])
    (job,) = make_queue(stack.redis, stack.runtime.settings.queue).jobs
    result = stack.runtime.discover(DiscoveryRequest.from_dict(job.args[0]))
    stack.ls.lookup_delay_s = 0.3  # both are past their first Redis calls before either posts
    writers = [stack.writer(), stack.writer()]
    written = [0, 0]

    def finish(index: int) -> None:
        written[index] = writers[index].job_finished(job.id, result)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(written) == [0, 1]
    assert stack.ls.per_task() == {1: 1} and stack.posts() == 1


def test_after_redis_lost_the_claim_a_prediction_label_studio_has_is_not_posted_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.ask([1])
    (job,) = make_queue(stack.redis, stack.runtime.settings.queue).jobs
    waiting = {k: stack.redis.dump(k) for k in stack.redis.keys("zerolabel:waiting:*")}
    stack.run_jobs(monkeypatch)
    assert stack.ls.per_task() == {1: 1}
    stack.redis.flushall()  # Redis restarts from an older copy: the task waits, nothing claimed
    for key, dumped in waiting.items():
        stack.redis.restore(key, 0, dumped)
    result = stack.runtime.discover(DiscoveryRequest.from_dict(job.args[0]))
    assert stack.writer().job_finished(job.id, result) == 0
    assert stack.ls.per_task() == {1: 1} and stack.posts() == 1
    assert stack.redis.keys("zerolabel:waiting:*") == []


def test_a_job_finishing_while_predict_records_its_task_is_answered_by_predict(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    collect = stack.service.dispatcher.collect

    def finish_then_time_out(queued: Any, timeout_s: float, **kwargs: Any) -> Any:
        late = collect(queued, timeout_s, **kwargs)  # late: no worker ran yet
        stack.run_jobs(monkeypatch)  # the job finishes after the check, before the record
        return late

    monkeypatch.setattr(stack.service.dispatcher, "collect", finish_then_time_out)
    (answer,) = stack.ask([1])
    assert answer.prediction is not None and answer.prediction["result"]
    assert stack.ls.predictions == []  # the worker saw no waiting task: /predict answered it
    assert stack.writer(later_s=RETRY_S + 1).retry_due() == 0 and stack.posts() == 0


def test_a_task_whose_job_failed_is_not_written_and_gets_no_entry(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    (answer,) = stack.ask([4], image="/data/upload/1/missing.png")
    assert answer.pending
    with caplog.at_level(logging.WARNING, "zerolabel.queue.writeback"):
        stack.run_jobs(monkeypatch)
    assert stack.ls.predictions == [] and stack.redis.keys("zerolabel:waiting:*") == []
    assert "task 4: no prediction written to Label Studio" in caplog.text and "404" in caplog.text
    (again,) = stack.ask([4], image="/data/upload/1/missing.png")
    assert again.entry == [] and again.reason is not None and "404" in again.reason


def test_a_waiting_task_of_another_label_studio_is_refused(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    with fake_label_studios(KEY) as start:
        other = start()
        other.images[IMAGE] = png((8, 6))
        settings = WorkerSettings(ls_url=other.url, ls_token=KEY)
        stack.ask([1])  # recorded for the backend's Label Studio
        (job,) = make_queue(stack.redis, stack.runtime.settings.queue).jobs
        result = stack.runtime.discover(DiscoveryRequest.from_dict(job.args[0]))
        stranger = WriteBack(stack.redis, LabelStudioSites.configure(other.url), KEY)
        with caplog.at_level(logging.WARNING, "zerolabel.queue.writeback"):
            assert stranger.job_finished(job.id, result) == 0
        assert other.seen == [] and [s for s in stack.ls.seen if s[0] == "POST"] == []
        assert f"{stack.ls.url} is not the one this worker is configured for" in caplog.text
        assert f"LABEL_STUDIO_URL={settings.ls_url}" in caplog.text


def test_without_a_setup_hostname_late_tasks_are_not_recorded(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.context = stack.service.context("", ProjectOptions())  # who asks is not known
    (answer,) = stack.ask([1])
    assert not answer.pending and answer.reason is not None and "late" in answer.reason
    stack.run_jobs(monkeypatch)
    assert stack.ls.seen == [("GET", IMAGE, f"Token {KEY}")]  # the image only: nothing written


def test_no_token_is_stored_in_redis_by_the_write_back(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.ls.post_faults.append(503)  # keeps a delivery due
    stack.ask([1, 2])
    stack.run_jobs(monkeypatch)
    values = redis_contents(stack.redis)
    assert any(b"zerolabel:waiting:" in v for v in values)
    assert any(b"zerolabel:finished:" in v for v in values)
    assert not [v for v in values if KEY.encode() in v]


def test_a_write_back_failure_never_fails_the_job(stack: Stack, caplog: pytest.LogCaptureFixture):
    stack.ask([1])
    (job,) = make_queue(stack.redis, stack.runtime.settings.queue).jobs
    stack.redis.set("zerolabel:finished:zl-old", b"{not json")  # e.g. written by another version
    stack.redis.hset("zerolabel:waiting:zl-old", "x", b"{}")
    stack.redis.zadd("zerolabel:writeback:due", {"zl-old": 0})
    result = stack.runtime.discover(DiscoveryRequest.from_dict(job.args[0]))
    with caplog.at_level(logging.WARNING, "zerolabel.queue.writeback"):
        after_job(stack.redis, stack.runtime.settings, job.id, result)
    assert stack.ls.per_task() == {1: 1}  # this job's task was written before the retry failed
    assert f"job {job.id}: late predictions not written" in caplog.text


def test_a_task_whose_image_in_label_studio_is_another_gets_nothing_written(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # A /predict call names task 7 with an image that is not task 7's in Label Studio.
    stack.ls.tasks[7] = {"image": "/data/upload/1/other.png"}
    stack.ask([7])
    failed = metrics.metrics().writebacks.labels("failed")
    before = failed._value.get()
    with caplog.at_level(logging.ERROR, logger="zerolabel.queue.writeback"):
        stack.run_jobs(monkeypatch)
    assert stack.ls.predictions == [] and stack.posts() == 0
    # The task's data as stored, read through the project's export: GET /api/tasks/7 would
    # make Label Studio (prelabeling on, its default) call /predict and wait on this very job.
    reads = [path for method, path, _ in stack.ls.seen if method == "GET"]
    assert "/api/projects/3/export?exportType=JSON&download_all_tasks=true&ids%5B%5D=7" in reads
    assert not [path for path in reads if path.startswith("/api/tasks")]
    assert failed._value.get() == before + 1
    assert "not the image this prediction was computed for" in caplog.text
    assert stack.redis.keys("zerolabel:waiting:*") == []  # given up, not tried again


def test_a_task_of_another_project_gets_nothing_written(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    # Project 3's /predict names task 8, which holds the same image but is in project 4.
    stack.ls.tasks[8] = {"image": IMAGE}
    stack.ls.task_projects[8] = 4
    stack.ask([8])
    with caplog.at_level(logging.ERROR, logger="zerolabel.queue.writeback"):
        stack.run_jobs(monkeypatch)
    assert stack.ls.predictions == [] and stack.posts() == 0
    assert "the task is not in project 3" in caplog.text
    assert stack.redis.keys("zerolabel:waiting:*") == []


def test_the_prediction_is_written_with_the_tasks_project(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    stack.ask([1])
    stack.run_jobs(monkeypatch)
    (written,) = stack.ls.predictions
    assert written["project"] == PROJECT  # else Label Studio warns for every prediction


def test_a_project_without_an_id_gets_no_write_back(stack: Stack):
    context = stack.service.context(stack.ls.url, ProjectOptions())  # /setup named no project
    tasks = [{"id": 1, "data": {"image": IMAGE}}]
    (answer,) = stack.service.answer(tasks, CONFIG, context)
    assert not answer.pending and stack.redis.keys("zerolabel:waiting:*") == []
