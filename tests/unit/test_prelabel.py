"""prelabel_project with a fake Label Studio client and a fake dispatcher (no servers)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from zerolabel.contract import Box, DiscoveryRequest, DiscoveryResult, Region, Rle
from zerolabel.errors import ConfigError, DiscoveryError, LabelStudioError
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.loop.prelabel import PrelabelReport, prelabel_project
from zerolabel.loop.waiting import GONE_AFTER_CHECKS, WORKER_CHECK_S
from zerolabel.queue.dispatch import LATE, Outcome
from zerolabel.queue.service import PredictionService
from zerolabel.settings import BackendSettings

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
</View>"""


class FakeClient:
    """The part of LabelStudioClient that prelabel uses; stores predictions in memory."""

    url = "http://ls.test:8080"
    token = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self._tasks = tasks
        self.created: list[dict[str, Any]] = []
        self.post_error: LabelStudioError | None = None
        self.store_despite_error = False
        self.interrupt_after: int | None = None
        self.interrupt_stored = False  # Ctrl-C after Label Studio stored the prediction
        self.backends: list[dict[str, Any]] = []
        self.model_version = "zerolabel"  # Label Studio sets the connection's title
        self.patches: list[dict[str, Any]] = []
        self.patch_error: LabelStudioError | None = None

    def project(self, project_id: int) -> dict[str, Any]:
        return {"id": project_id, "label_config": CONFIG, "model_version": self.model_version}

    def request(self, method: str, path: str, *, json: Any = None, **kwargs: Any) -> Any:
        if (method, path) != ("PATCH", "/api/projects/1"):
            raise AssertionError(f"unexpected call {method} {path}")
        if self.patch_error is not None:
            raise self.patch_error
        self.patches.append(json)
        self.model_version = json.get("model_version", self.model_version)
        return self.project(1)

    def ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        return self.backends

    def label_config(self, project_id: int) -> str:
        return CONFIG

    def tasks(self, project_id: int, page_size: int = 100) -> Any:
        for task in self._tasks:
            versions = [p["model_version"] for p in self.created if p["task"] == task["id"]]
            predictions = task.get("predictions", []) + [{"model_version": v} for v in versions]
            yield {**task, "predictions": predictions}

    def create_prediction(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        score: float,
        model_version: str,
        *,
        project: int | None = None,
    ) -> dict[str, Any]:
        body = {
            "task": task_id,
            "result": result,
            "score": score,
            "model_version": model_version,
            "project": project,
        }
        if self.interrupt_after is not None and len(self.created) == self.interrupt_after:
            if self.interrupt_stored:
                self.created.append(body)
            raise KeyboardInterrupt
        if self.post_error is not None:
            if self.store_despite_error:
                self.created.append(body)
            raise self.post_error
        self.created.append(body)
        return {"id": len(self.created), **body}

    def predictions(
        self, project_id: int | None = None, *, task_id: int | None = None
    ) -> list[Any]:
        return [p for p in self.created if task_id is None or p["task"] == task_id]


@dataclass
class FakeJob:
    request: DiscoveryRequest


@dataclass
class FakeDispatcher:
    """Answers every request with a one-region result unless told otherwise per image."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # "submit <task>" / "collect <tasks>"
    jobs: list[FakeJob] = field(default_factory=list)
    down: bool = False
    workers: list[int] = field(default_factory=lambda: [1])  # live workers per health(); last stays

    def health(self) -> dict[str, Any]:
        if self.down:
            return {"reachable": False, "queue": "zerolabel", "error": "Connection refused"}
        count = self.workers.pop(0) if len(self.workers) > 1 else self.workers[0]
        return {"reachable": True, "queue": "zerolabel", "queue_depth": 0, "workers": count}

    def submit(self, request: DiscoveryRequest) -> FakeJob:
        if self.down:
            raise RedisConnectionError("Connection refused")
        self.log.append(f"submit {request.task_id}")
        self.jobs.append(FakeJob(request))
        return self.jobs[-1]

    def collect(self, jobs: list[FakeJob], timeout_s: float) -> list[Outcome]:
        self.log.append("collect " + ",".join(str(j.request.task_id) for j in jobs))
        return [self.outcomes.get(j.request.image) or _found(j.request) for j in jobs]


def _found(request: DiscoveryRequest) -> Outcome:
    mask = Rle((4, 6), [8, 8, 8])  # columns 2 and 3 (column-major runs)
    region = Region(Box(2, 0, 4, 4), 0.8, "lost", mask)
    version = request.spec.model_version()
    return Outcome(DiscoveryResult(request.image, (4, 6), [region], version, request.task_id))


def _tasks(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "data": {"image": f"/data/upload/1/{i}.png"}} for i in range(1, n + 1)]


@pytest.fixture
def service() -> PredictionService:
    service = PredictionService(BackendSettings(), redis=fakeredis.FakeRedis())
    service.dispatcher = FakeDispatcher()  # type: ignore[assignment]
    return service


def _prelabel(client: FakeClient, service: PredictionService, **kwargs: Any) -> PrelabelReport:
    kwargs.setdefault("progress", False)
    return prelabel_project(client, 1, service, batch_size=2, **kwargs)  # type: ignore[arg-type]


def _version(service: PredictionService) -> str:
    return service.model_version(CONFIG, ProjectOptions())


def test_writes_one_prediction_per_task_and_skips_the_current_version(service):
    version = _version(service)
    tasks = _tasks(4)
    tasks[0]["predictions"] = [{"model_version": version}]
    tasks[1]["predictions"] = [{"model_version": "someone-else"}]
    client = FakeClient(tasks)
    report = _prelabel(client, service)
    assert (report.total, report.skipped_existing, report.written, report.failed) == (4, 1, 3, [])
    assert [p["task"] for p in client.created] == [2, 3, 4]
    for prediction in client.created:
        assert prediction["model_version"] == version and prediction["score"] == 0.8
        assert prediction["project"] == 1  # else Label Studio warns for every prediction
        kinds = [item["type"] for item in prediction["result"]]
        assert kinds == ["rectanglelabels"]  # one region per object: LOST's box (shapes "auto")
    assert report.complete and "3 written, 1 already pre-labeled, 0 failed" in report.summary()
    again = _prelabel(client, service)
    assert (again.written, again.skipped_existing) == (0, 4)


def test_requests_carry_the_spec_and_the_workers_label_studio_but_no_token(service):
    _prelabel(FakeClient(_tasks(1)), service, worker_ls_url="http://label-studio:8080")
    request = service.dispatcher.jobs[0].request
    assert request.spec.model_version() == _version(service)
    assert (request.image, request.task_id) == ("/data/upload/1/1.png", 1)
    assert request.ls_url == "http://label-studio:8080"
    assert FakeClient.token not in json.dumps(request.to_dict())  # workers use their own key


def test_the_next_batch_is_queued_before_this_one_is_collected(service):
    _prelabel(FakeClient(_tasks(5)), service)
    assert service.dispatcher.log == [
        "submit 1",
        "submit 2",
        "submit 3",
        "submit 4",
        "collect 1,2",
        "submit 5",
        "collect 3,4",
        "collect 5",
    ]


def test_failed_late_and_error_tasks_are_reported_and_retried_next_run(service):
    client = FakeClient(_tasks(4) + [{"id": 5, "data": {"text": "no image"}}])
    dispatcher = service.dispatcher
    broken = DiscoveryResult("/data/upload/1/3.png", (0, 0), error="HTTP 404 Not Found")
    dispatcher.outcomes = {
        "/data/upload/1/1.png": LATE,
        "/data/upload/1/2.png": Outcome(None, "failed: RuntimeError: boom"),
        "/data/upload/1/3.png": Outcome(broken),
    }
    report = _prelabel(client, service)
    assert report.written == 1 and [p["task"] for p in client.created] == [4]
    assert dict(report.failed) == {
        5: "task data has no 'image' image URL",
        1: "late: still running, ask again",
        2: "failed: RuntimeError: boom",
        3: "HTTP 404 Not Found",
    }
    assert not report.complete and "Run again" in report.summary()

    dispatcher.outcomes = {}
    again = _prelabel(client, service)
    assert (again.written, again.skipped_existing, len(again.failed)) == (3, 1, 1)


def test_max_tasks_defers_the_rest(service):
    client = FakeClient(_tasks(5))
    report = _prelabel(client, service, max_tasks=2)
    assert (report.written, report.deferred, report.complete) == (2, 3, False)
    assert "3 left for later" in report.summary()
    assert _prelabel(client, service).written == 3


def test_a_lost_reply_is_checked_before_reporting_a_failure(service):
    client = FakeClient(_tasks(2))
    client.post_error = LabelStudioError(None, "POST", "/api/predictions", "timed out")
    client.store_despite_error = True
    report = _prelabel(client, service)
    assert (report.written, report.failed) == (2, [])

    client = FakeClient(_tasks(1))
    client.post_error = LabelStudioError(400, "POST", "/api/predictions", "Validation error")
    report = _prelabel(client, service)
    assert report.written == 0 and "Validation error" in report.failed[0][1]


def test_refused_credentials_stop_the_run(service):
    client = FakeClient(_tasks(3))
    client.post_error = LabelStudioError(403, "POST", "/api/predictions", "forbidden")
    with pytest.raises(LabelStudioError, match="forbidden"):
        _prelabel(client, service)


def test_an_interrupted_run_is_finished_by_the_next_one(service, caplog):
    client = FakeClient(_tasks(5))
    client.interrupt_after = 3
    with pytest.raises(KeyboardInterrupt):
        _prelabel(client, service)
    assert len(client.created) == 3
    assert "interrupted with 2 task(s) not done" in caplog.text
    client.interrupt_after = None
    report = _prelabel(client, service)
    assert (report.skipped_existing, report.written) == (3, 2)
    assert sorted(p["task"] for p in client.created) == [1, 2, 3, 4, 5]


def test_unreachable_redis_is_one_clear_error(service):
    service.dispatcher.down = True
    with pytest.raises(DiscoveryError, match="Redis unreachable at redis://"):
        _prelabel(FakeClient(_tasks(2)), service)


def test_the_progress_bar_counts_tasks(service, caplog):
    """Not on a terminal, progress is a log line (a bar only on a terminal: test_progress)."""
    caplog.set_level(logging.INFO, logger="zerolabel.progress")
    _prelabel(FakeClient(_tasks(3)), service, progress=True)
    assert "3/3" in caplog.text
    end = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pre-labeling:")]
    assert len(end) == 1 and end[0].startswith("pre-labeling: 3/3 tasks (100%) in ")


def test_bad_batch_size_is_refused(service):
    with pytest.raises(ValueError, match="batch_size"):
        prelabel_project(FakeClient([]), 1, service, batch_size=0)  # type: ignore[arg-type]


def test_options_with_an_unknown_parameter_fail_at_once_and_queue_nothing(service):
    with pytest.raises(ConfigError, match="unknown extra params \\['tua'\\]: allowed keys"):
        ProjectOptions.parse('{"tua": 0.2}')
    client = FakeClient(_tasks(3))
    options = ProjectOptions.parse('{"method": "tokencut", "params": {"tua": 0.2}}')
    with pytest.raises(ConfigError, match=r"no parameter 'tua'.*tau \(float.*eps \(float"):
        _prelabel(client, service, options=options)
    assert service.dispatcher.jobs == [] and service.dispatcher.log == []
    assert client.created == []


# --- live workers ----------------------------------------------------------------------------


def test_no_live_worker_is_one_clear_error_before_anything_is_queued(service):
    service.dispatcher.workers = [0]
    client = FakeClient(_tasks(3))
    with pytest.raises(DiscoveryError) as raised:
        _prelabel(client, service)
    message = str(raised.value)
    assert "no live worker on queue 'zerolabel' at redis://127.0.0.1:6379/0" in message
    assert "3 task(s) to pre-label" in message and "start `zerolabel worker`" in message
    assert service.dispatcher.log == [] and client.created == []


def test_the_real_dispatcher_counts_heartbeats_not_registrations():
    from zerolabel.queue.heartbeat import Beat, heartbeat_key

    redis = fakeredis.FakeRedis()
    service = PredictionService(BackendSettings(), redis=redis)
    client = FakeClient(_tasks(2))
    with pytest.raises(DiscoveryError, match="no live worker on queue 'zerolabel'"):
        _prelabel(client, service, wait_timeout_s=0)
    assert service.dispatcher.queue.count == 0
    beat = Beat("w1", "zerolabel", "instance-1", 1, "host")
    redis.set(heartbeat_key("w1"), beat.dumps(), ex=5)
    report = _prelabel(client, service, wait_timeout_s=0)  # queued: the worker is alive
    assert service.dispatcher.queue.count == 2 and len(report.failed) == 2


def test_a_project_with_nothing_to_do_needs_no_worker(service):
    client = FakeClient(_tasks(2))
    _prelabel(client, service)
    service.dispatcher.workers = [0]
    assert _prelabel(client, service).skipped_existing == 2


def test_workers_that_all_stop_end_the_wait_early(service):
    dispatcher = service.dispatcher
    dispatcher.workers = [1, 0]  # alive at the start, then gone
    dispatcher.outcomes = {"/data/upload/1/1.png": LATE}
    client = FakeClient(_tasks(4))
    with pytest.raises(DiscoveryError) as raised:
        _prelabel(client, service, wait_timeout_s=600)
    message = str(raised.value)
    assert "every worker stopped while 1 task(s) waited (1 prediction(s) written so far)" in message
    assert "start `zerolabel worker`" in message
    assert [p["task"] for p in client.created] == [2]  # what had ended is stored
    slices = [line for line in dispatcher.log if line.startswith("collect 1")]
    assert len(slices) == GONE_AFTER_CHECKS  # not 600 s of slices


def test_a_worker_back_within_the_grace_keeps_the_run_going(service):
    dispatcher = service.dispatcher
    dispatcher.workers = [1, 0, 1]
    late = LATE
    dispatcher.outcomes = {"/data/upload/1/1.png": late}
    report = _prelabel(FakeClient(_tasks(2)), service, wait_timeout_s=20)
    assert dict(report.failed) == {1: "late: still running, ask again"}
    slices = [line for line in dispatcher.log if line.startswith("collect 1")]
    assert len(slices) == 20 / WORKER_CHECK_S  # the whole wait


# --- interrupts ------------------------------------------------------------------------------


def test_an_interrupt_after_label_studio_stored_the_prediction_counts_it(service, caplog):
    client = FakeClient(_tasks(5))
    client.interrupt_after, client.interrupt_stored = 2, True
    with pytest.raises(KeyboardInterrupt):
        _prelabel(client, service)
    assert len(client.created) == 3
    assert "interrupted with 2 task(s) not done" in caplog.text
    assert "3 written, 0 already pre-labeled, 0 failed, 2 not done (interrupted)" in caplog.text
    assert "Run again to finish" in caplog.text


# --- the ML backend connection's extra params ------------------------------------------------

BACKEND = {"id": 1, "title": "zerolabel", "url": "http://backend:9090"}


def test_without_options_the_connections_extra_params_give_the_version(service):
    client = FakeClient(_tasks(2))
    client.backends = [{**BACKEND, "extra_params": {"method": "tokencut", "tau": 0.3}}]
    report = _prelabel(client, service)
    version = service.model_version(
        CONFIG, ProjectOptions.parse({"method": "tokencut", "tau": 0.3})
    )
    assert version != _version(service)  # not the environment's defaults
    assert report.model_version == version
    assert {p["model_version"] for p in client.created} == {version}


def test_options_that_give_the_connections_version_are_accepted_however_written(service):
    client = FakeClient(_tasks(1))
    client.backends = [{**BACKEND, "extra_params": '{"method": "tokencut", "tau": 0.3}'}]
    options = ProjectOptions.parse({"params": {"tau": 0.3}, "method": "tokencut"})
    assert _prelabel(client, service, options=options).written == 1


def test_options_that_give_another_version_are_refused_before_anything_is_queued(service):
    client = FakeClient(_tasks(2))
    client.backends = [{**BACKEND, "extra_params": {"method": "tokencut"}}]
    options = ProjectOptions.parse({"method": "maskcut"})
    with pytest.raises(ConfigError) as raised:
        _prelabel(client, service, options=options)
    message = str(raised.value)
    ours = service.model_version(CONFIG, options)
    theirs = service.model_version(CONFIG, ProjectOptions.parse({"method": "tokencut"}))
    assert f"--options give model version {ours}" in message and f"predicts {theirs}" in message
    assert "'zerolabel' (http://backend:9090)" in message and '{"method": "tokencut"}' in message
    assert "drop --options" in message and "\n" not in message
    assert service.dispatcher.log == [] and client.created == []


def test_connections_that_disagree_need_options(service):
    client = FakeClient(_tasks(1))
    client.backends = [
        {**BACKEND, "extra_params": {"method": "tokencut"}},
        {**BACKEND, "id": 2, "title": "other", "extra_params": None},
    ]
    with pytest.raises(ConfigError, match="ML backend connections disagree.*give --options"):
        _prelabel(client, service)
    assert service.dispatcher.log == []


def test_the_project_model_version_becomes_the_one_written(service):
    """Label Studio's Prediction score column averages only predictions of the project's
    model_version, which connecting a backend sets to the connection's title."""
    client = FakeClient(_tasks(2))
    _prelabel(client, service)
    assert client.patches == [{"model_version": _version(service)}]
    _prelabel(client, service)  # nothing new, and the version already agrees: no call
    assert len(client.patches) == 1


def test_tasks_prelabeled_earlier_are_enough_to_set_the_project_version(service):
    version = _version(service)
    client = FakeClient(
        [{**task, "predictions": [{"model_version": version}]} for task in _tasks(2)]
    )
    report = _prelabel(client, service)
    assert (report.written, report.skipped_existing) == (0, 2)
    assert client.patches == [{"model_version": version}]


def test_no_prediction_of_the_version_leaves_the_project_version_alone(service):
    client = FakeClient(_tasks(1))
    service.dispatcher.outcomes = {"/data/upload/1/1.png": Outcome(None, "failed: boom")}
    report = _prelabel(client, service)
    assert report.written == 0 and client.patches == []  # Label Studio would refuse it


def test_a_refused_project_version_is_a_warning_not_a_failed_run(service, caplog):
    client = FakeClient(_tasks(1))
    client.patch_error = LabelStudioError(400, "PATCH", "/api/projects/1", "no such version")
    report = _prelabel(client, service)
    assert report.written == 1 and report.complete
    assert "Prediction score column stays empty" in caplog.text
    assert "no such version" in caplog.text


@pytest.mark.parametrize("down", ["redis", "workers"])
def test_the_redis_password_stays_out_of_prelabel_errors(down):
    from zerolabel.settings import QueueSettings, WorkerSettings

    queue = QueueSettings(redis_url="redis://:s3cret@queue.internal:6379/0")
    settings = BackendSettings(discovery=WorkerSettings(queue=queue))
    service = PredictionService(settings, redis=fakeredis.FakeRedis())
    service.dispatcher = FakeDispatcher()  # type: ignore[assignment]
    service.dispatcher.down = down == "redis"
    service.dispatcher.workers = [0]
    with pytest.raises(DiscoveryError) as raised:
        _prelabel(FakeClient(_tasks(2)), service)
    assert "s3cret" not in str(raised.value)
    assert "at redis://queue.internal:6379/0" in str(raised.value)
