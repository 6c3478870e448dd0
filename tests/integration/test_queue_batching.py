"""Batched workers: real redis-server, real worker processes (tiny random ViT), real downloads."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from zerolabel.contract import DiscoveryRequest, DiscoverySpec, Region
from zerolabel.io.images import ImageLimits, load_file
from zerolabel.pipeline import ModelStore
from zerolabel.queue.dispatch import Dispatcher, Outcome
from zerolabel.settings import WorkerSettings

from tests.servers import free_port, image_server, redis_server, start_worker, stop, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "voc2007" / "JPEGImages"
BATCH = 8


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 distinct small crops of the example photos, in two sizes, plus one file that is no
    image."""
    folder = tmp_path_factory.mktemp("crops")
    sources = sorted(EXAMPLES.glob("*.jpg"))[:5]
    for n in range(40):
        with Image.open(sources[n % len(sources)]) as photo:
            x, y = 11 * (n // len(sources)), 7 * (n // len(sources))
            size = (192, 144) if n % 2 else (144, 192)
            photo.convert("RGB").crop((x, y, x + size[0], y + size[1])).save(
                folder / f"{n:02d}.png"
            )
    (folder / "broken.png").write_bytes(b"\x89PNG but nothing after that")
    return folder


def _env(redis_url: str, images_url: str, tiny_env: dict[str, str]) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        **tiny_env,
        "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
        "ZEROLABEL_LEASE_S": "2",
        "ZEROLABEL_WORKER_BATCH": str(BATCH),
    }


def _dispatcher(env: dict[str, str]) -> Dispatcher:
    settings = WorkerSettings.from_env(env).queue
    return Dispatcher(Redis.from_url(settings.redis_url), settings)


def _requests(spec: DiscoverySpec, images_url: str, names: list[str]) -> list[DiscoveryRequest]:
    return [DiscoveryRequest(spec, f"{images_url}/{name}", n) for n, name in enumerate(names)]


def _ended(
    dispatcher: Dispatcher, requests: list[DiscoveryRequest], wait_s: float
) -> list[Outcome]:
    """Wait for the jobs as they are (asking again would queue a failed job anew)."""
    jobs = [
        Job.fetch(r.job_id, connection=dispatcher.redis, serializer=JSONSerializer)
        for r in requests
    ]
    return dispatcher.collect(jobs, wait_s)


def _in_process(env: dict[str, str], spec: DiscoverySpec, folder: Path, names: list[str]):
    """Regions ``Discoverer.run`` finds for the images in this process."""
    settings = WorkerSettings.from_env(env)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    images = [load_file(folder / n, limits, max_side=spec.effective_max_side()) for n in names]
    return ModelStore(settings).runner(spec).run(images)


def _same(found: list[Region], expected: list[Region]) -> bool:
    return len(found) == len(expected) and all(
        a.box == b.box and a.mask == b.mask and a.score == pytest.approx(b.score, abs=1e-5)
        for a, b in zip(found, expected, strict=True)
    )


def _batches(log: Path) -> dict[str, list[int]]:
    """Batch sizes per model_version, from the worker's log."""
    sizes: dict[str, list[int]] = {}
    for size, version in re.findall(r"batch of (\d+) jobs for (\S+):", log.read_text()):
        sizes.setdefault(version, []).append(int(size))
    return sizes


def _batch_metrics(port: int) -> dict[str, float]:
    """Batch-size sum and count, the images counter and the queue stages' observation counts,
    from the worker's metrics port."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "zerolabel_worker_batch_size_sum":
                found["sum"] = sample.value
            elif sample.name == "zerolabel_worker_batch_size_count":
                found["count"] = sample.value
            elif sample.name == "zerolabel_worker_images_total":
                found["images"] = sample.value
            elif sample.name == "zerolabel_worker_stage_seconds_count":
                stage = sample.labels["stage"]
                if stage in ("claim", "wait", "finish"):
                    found[stage] = sample.value
    return found


def test_waiting_jobs_are_served_in_batches_with_in_process_results(tmp_path, photos, tiny_env):
    names = [f"{n:02d}.png" for n in range(32)]
    log = tmp_path / "worker.log"
    with redis_server(tmp_path) as (redis_url, _), image_server(photos) as (images_url, _):
        env = _env(redis_url, images_url, tiny_env)
        dispatcher = _dispatcher(env)
        spec = WorkerSettings.from_env(env).spec()
        requests = _requests(spec, images_url, names)
        for request in requests:  # all 32 wait before any worker runs
            dispatcher.submit(request)
        port = free_port()
        worker = start_worker({**env, "ZEROLABEL_METRICS_PORT": str(port)}, log)
        try:
            outcomes = _ended(dispatcher, requests, wait_s=240)
            runs = _batch_metrics(port)
        finally:
            stop(worker)
    assert [o.reason for o in outcomes] == [None] * 32
    sizes = _batches(log)[spec.model_version()]
    assert sum(sizes) == 32 and max(sizes) <= BATCH and max(sizes) > 1, sizes
    # The worker's metrics say the same: 32 images in as many runs as the log has batches,
    # and each job's claim, wait and finish observed once.
    queue_stages = {"claim": 32.0, "wait": 32.0, "finish": 32.0}
    assert runs == {"sum": 32.0, "count": float(len(sizes)), "images": 32.0, **queue_stages}
    expected = _in_process(env, spec, photos, names)
    for outcome, regions in zip(outcomes, expected, strict=True):
        assert outcome.result is not None and not outcome.result.error
        assert _same(outcome.result.regions, regions)
    assert sum(bool(regions) for regions in expected) > len(names) / 2  # objects were found


def test_specs_never_share_a_batch_and_a_broken_image_fails_alone(tmp_path, photos, tiny_env):
    names = [f"{n:02d}.png" for n in range(32, 40)]
    log = tmp_path / "worker.log"
    with redis_server(tmp_path) as (redis_url, _), image_server(photos) as (images_url, _):
        env = _env(redis_url, images_url, tiny_env)
        dispatcher = _dispatcher(env)
        lost = WorkerSettings.from_env(env).spec()
        tokencut = WorkerSettings.from_env(env).spec(method="tokencut")
        lost_requests = _requests(lost, images_url, [*names[:3], "broken.png", *names[3:]])
        tokencut_requests = _requests(tokencut, images_url, names)
        for pair in zip(lost_requests, tokencut_requests, strict=False):
            for request in pair:  # the two specs alternate in the queue
                dispatcher.submit(request)
        dispatcher.submit(lost_requests[-1])
        worker = start_worker(env, log)
        try:
            lost_outcomes = _ended(dispatcher, lost_requests, wait_s=240)
            tokencut_outcomes = _ended(dispatcher, tokencut_requests, wait_s=60)
        finally:
            stop(worker)
    sizes = _batches(log)
    assert sum(sizes[lost.model_version()]) == 9 and sum(sizes[tokencut.model_version()]) == 8
    assert max(sizes[lost.model_version()]) > 1
    broken = lost_outcomes.pop(3)
    assert broken.result is not None and broken.result.regions == []
    assert broken.result.error == f"{images_url}/broken.png: not an image (unrecognised format)"
    for spec, outcomes in ((lost, lost_outcomes), (tokencut, tokencut_outcomes)):
        expected = _in_process(env, spec, photos, names)
        for outcome, regions in zip(outcomes, expected, strict=True):
            assert outcome.result is not None and not outcome.result.error
            assert outcome.result.model_version == spec.model_version()
            assert _same(outcome.result.regions, regions)


def test_a_worker_killed_mid_batch_loses_no_job(tmp_path, photos, tiny_env):
    names = [f"{n:02d}.png" for n in range(24)]
    log = tmp_path / "workers.log"
    with redis_server(tmp_path) as (redis_url, _), image_server(photos) as (images_url, handler):
        env = _env(redis_url, images_url, {**tiny_env})
        env["ZEROLABEL_WORKER_BATCH"] = "4"
        dispatcher = _dispatcher(env)
        spec = WorkerSettings.from_env(env).spec()
        requests = _requests(spec, images_url, names)
        for name in names:
            handler.delays[f"/{name}"] = 1.5  # every first download stalls a while
        jobs = [dispatcher.submit(request) for request in requests]
        workers = [start_worker(env, log)]
        try:

            def states() -> list[JobStatus]:
                return [job.get_status(refresh=True) for job in jobs]

            def mid_batch() -> bool:
                now = states()
                return JobStatus.FINISHED in now and JobStatus.STARTED in now

            wait_for(mid_batch, 120, "a batch finished and the next one claimed", poll_s=0.02)
            workers[0].send_signal(signal.SIGKILL)
            assert workers[0].wait(10) == -signal.SIGKILL
            at_kill = states()
            claimed = [job for job, state in zip(jobs, at_kill, strict=True) if state == "started"]
            assert claimed and at_kill.count(JobStatus.QUEUED)  # held, and still waiting, jobs
            workers.append(start_worker(env, log))
            outcomes: list[Outcome] = []
            for _ in range(10):  # the backend asks again until every task has its result
                outcomes = dispatcher.collect([dispatcher.submit(r) for r in requests], 20)
                if all(outcome.result is not None for outcome in outcomes):
                    break
        finally:
            for worker in workers:
                stop(worker)
    assert [o.reason for o in outcomes] == [None] * len(names)
    assert all(o.result and not o.result.error for o in outcomes)
    expected = _in_process(env, spec, photos, names)
    assert all(_same(o.result.regions, r) for o, r in zip(outcomes, expected, strict=True))
