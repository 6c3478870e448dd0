"""The worker runtime without models: fetcher cache, runner choice, refused jobs."""

from __future__ import annotations

from typing import Any

import fakeredis
import numpy as np
import pytest
from rq import Retry
from rq.job import JobStatus
from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import ConfigError, DiscoveryError, WeightsError
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import Discoverer, ModelStore
from zerolabel.queue import jobs, runtime
from zerolabel.queue.dispatch import JOB_FUNCTION, make_queue
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.queue.worker import run_worker
from zerolabel.settings import QueueSettings, WorkerSettings


class RecordingFetcher:
    """Stands in for io.fetch.Fetcher: remembers its policy and whether it was closed."""

    made: list[RecordingFetcher] = []

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.closed = False
        RecordingFetcher.made.append(self)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fetchers(monkeypatch: pytest.MonkeyPatch) -> list[RecordingFetcher]:
    RecordingFetcher.made = []
    monkeypatch.setattr(runtime, "Fetcher", RecordingFetcher)
    return RecordingFetcher.made


SETTINGS = WorkerSettings(
    ls_url="http://ls:8080", ls_token="worker-key", ls_aliases=("http://localhost:8080",)
)


def _request(ls_url: str | None, image: str = "/data/upload/1/a.jpg") -> DiscoveryRequest:
    return DiscoveryRequest(DiscoverySpec(), image, 1, ls_url)


def test_fetchers_are_kept_per_configured_label_studio_url(fetchers):
    worker = WorkerRuntime(SETTINGS)
    first = worker.fetcher(_request("http://ls:8080"))
    assert worker.fetcher(_request(None)) is first  # no URL named: LABEL_STUDIO_URL
    assert worker.fetcher(_request("HTTP://LS:8080/")) is first  # the same origin
    assert worker.fetcher(_request("http://evil:1", "http://ls:8080/a.jpg")) is first
    alias = worker.fetcher(_request("http://localhost:8080"))
    assert len(fetchers) == 2 and alias.policy.ls_url == "http://localhost:8080"
    assert alias.policy.ls_aliases == ("http://ls:8080",)
    assert {f.policy.ls_token for f in fetchers} == {"worker-key"}  # the worker's own key
    worker.close()
    assert all(f.closed for f in fetchers)


@pytest.mark.parametrize(
    "ls_url",
    ["http://evil:1", "http://ls:8081", "https://ls:8080", "http://user@ls:8080", "ls:8080"],
)
def test_a_label_studio_the_worker_is_not_configured_for_gets_no_fetcher(fetchers, ls_url):
    worker = WorkerRuntime(SETTINGS)
    for _ in range(20):
        with pytest.raises(ConfigError, match="ZEROLABEL_LABEL_STUDIO_ALIASES") as info:
            worker.fetcher(_request(ls_url))
    assert fetchers == [] and "user" not in str(info.value)
    assert "LABEL_STUDIO_URL=http://ls:8080" in str(info.value)


def test_a_refused_label_studio_is_a_per_task_error(fetchers):
    answer = WorkerRuntime(SETTINGS).discover(_request("http://evil:1"))
    assert answer.task_id == 1 and answer.regions == [] and fetchers == []
    assert answer.error and "not the one this worker is configured for" in answer.error


def test_a_detector_spec_without_a_detector_file_is_refused_before_loading():
    store = ModelStore(WorkerSettings())
    spec = DiscoverySpec(method="cad", backbone="cad", weights="cad-1.pt")
    with pytest.raises(ConfigError, match="ZEROLABEL_CAD_CHECKPOINT"):
        store.runner(spec)


def test_specs_for_other_weights_are_refused_before_loading(tmp_path):
    store = ModelStore(WorkerSettings(cad_checkpoint=str(tmp_path / "cad-mine.pt")))
    theirs = DiscoverySpec(method="cad", backbone="cad", weights="cad-theirs.pt")
    with pytest.raises(WeightsError, match="'cad-theirs.pt' but this worker serves 'cad-mine.pt'"):
        store.runner(theirs)
    tagged = DiscoverySpec(method="lost", weights="my-finetune")
    with pytest.raises(WeightsError, match="weights 'my-finetune' but this worker has 'hub'"):
        store.runner(tagged)


def test_a_job_whose_spec_cannot_be_built_answers_an_error_and_is_not_retried(monkeypatch):
    def no_runtime() -> WorkerRuntime:
        raise AssertionError("the runtime (and its model) must not be touched")

    monkeypatch.setattr(jobs, "get_runtime", no_runtime)
    request = DiscoveryRequest(DiscoverySpec(method="tokencut"), "a.jpg", 4).to_dict()
    request["spec"]["params"] = {"tua": 0.2}  # a backend of another version sent it
    redis = fakeredis.FakeRedis()
    queue = make_queue(redis, QueueSettings())
    job = queue.enqueue(JOB_FUNCTION, request, retry=Retry(max=2))
    run_worker(redis, QueueSettings(), burst=True, with_scheduler=False)
    assert job.get_status(refresh=True) == JobStatus.FINISHED  # answered, not failed
    answer = job.return_value()
    assert answer["task_id"] == 4 and answer["regions"] == []
    assert "no parameter 'tua'" in answer["error"] and "tau (float" in answer["error"]


def test_a_discovery_job_run_outside_zerolabel_worker_is_an_explicit_error():
    with pytest.raises(DiscoveryError, match="served in batches by `zerolabel worker`"):
        jobs.discover(DiscoveryRequest(DiscoverySpec(), "a.jpg").to_dict())


class Patch16:
    """The one fact Discoverer.frame needs about a backbone."""

    patch_size = 16


@pytest.mark.parametrize(
    ("env", "content_hw"),
    [
        pytest.param({"ZEROLABEL_MAX_SIDE": "0"}, (1500, 3000), id="zero-is-full-resolution"),
        pytest.param({}, (512, 1024), id="unset-is-the-method-default"),
        pytest.param({"ZEROLABEL_MAX_SIDE": "600"}, (300, 600), id="a-cap"),
    ],
)
def test_max_side_from_the_environment_reaches_the_network_input(env, content_hw):
    spec = WorkerSettings.from_env(env).spec()
    runner = Discoverer(Patch16(), spec)  # type: ignore[arg-type]
    assert runner.max_side == (None if content_hw == (1500, 3000) else content_hw[1])
    image = LoadedImage("a.jpg", np.zeros((1500, 3000, 3), np.uint8), (1500, 3000), "0")
    assert runner.frame(image).content_hw == content_hw


def test_a_label_studio_folder_that_is_missing_stops_the_worker_at_start(tmp_path):
    settings = WorkerSettings(
        ls_url="http://ls:8080", ls_token="k", ls_media=str(tmp_path / "missing")
    )
    with pytest.raises(ConfigError, match="missing"):
        WorkerRuntime(settings)
