"""Workers against faults: Redis restarting mid-batch, a job that kills its worker, a job that can
never succeed, a worker killed and restarted under its name. Real redis-server, real workers."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
from redis import Redis
from rq.job import JobStatus
from zerolabel.contract import DiscoveryRequest
from zerolabel.queue.dispatch import Dispatcher, Outcome
from zerolabel.queue.runs import QUARANTINE_REASON
from zerolabel.settings import WorkerSettings

from tests.servers import RedisServer, image_server, start_worker, stop, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PHOTOS = ("000001.jpg", "000004.jpg", "000032.jpg")


def _photos(tmp: Path, copies: int) -> list[str]:
    """``copies`` image files (the example photos again under other names)."""
    folder = tmp / "photos"
    folder.mkdir()
    names = []
    for n in range(copies):
        name = f"{n:02d}-{PHOTOS[n % len(PHOTOS)]}"
        shutil.copy(EXAMPLES / "voc2007" / "JPEGImages" / PHOTOS[n % len(PHOTOS)], folder / name)
        names.append(name)
    return names


def _env(redis_url: str, images_url: str, tiny_env: dict[str, str]) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        **tiny_env,
        "ZEROLABEL_ALLOWED_HOSTS": images_url.removeprefix("http://"),
        "ZEROLABEL_LEASE_S": "2",
        "ZEROLABEL_FETCH_TIMEOUT_S": "5",
    }


def _requests(env: dict[str, str], urls: list[str]) -> list[DiscoveryRequest]:
    spec = WorkerSettings.from_env(env).spec()
    return [DiscoveryRequest(spec, url, task) for task, url in enumerate(urls, start=1)]


def _dispatcher(env: dict[str, str]) -> Dispatcher:
    settings = WorkerSettings.from_env(env).queue
    return Dispatcher(Redis.from_url(settings.redis_url), settings)


def _ask(dispatcher: Dispatcher, requests: list[DiscoveryRequest], wait_s: float) -> list[Outcome]:
    """What the backend does for one /predict call."""
    jobs = [dispatcher.submit(request) for request in requests]
    return dispatcher.collect(jobs, wait_s)


def _live(dispatcher: Dispatcher) -> int:
    return int(dispatcher.health()["workers"])


def test_workers_ride_out_a_redis_restart_and_every_task_gets_a_result(tmp_path, tiny_env):
    names = _photos(tmp_path, 8)
    redis = RedisServer(tmp_path, appendonly=True)
    redis.start()
    log = tmp_path / "workers.log"
    workers = []
    try:
        with image_server(tmp_path / "photos") as (images_url, handler):
            env = _env(redis.url, images_url, tiny_env)
            workers = [start_worker(env, log), start_worker(env, log)]
            dispatcher = _dispatcher(env)
            wait_for(lambda: _live(dispatcher) == 2, 120, "two workers")
            for name in names:
                handler.delays[f"/{name}"] = 1.0  # each job takes a while: a batch in flight
            requests = _requests(env, [f"{images_url}/{name}" for name in names])
            jobs = [dispatcher.submit(request) for request in requests]

            def finished() -> int:
                return sum(job.get_status(refresh=True) == JobStatus.FINISHED for job in jobs)

            wait_for(lambda: finished() >= 1, 60, "the first result")
            assert finished() < len(jobs)  # Redis goes away mid-batch
            redis.stop()
            time.sleep(3)
            redis.start()  # same port, same append-only file
            outcomes: list[Outcome] = []
            for _ in range(6):  # the backend asks again until every task has its result
                outcomes = _ask(dispatcher, requests, wait_s=20)
                if all(outcome.result is not None for outcome in outcomes):
                    break
            assert [o.reason for o in outcomes] == [None] * len(requests)
            assert all(o.result and o.result.regions and not o.result.error for o in outcomes)
            assert [worker.poll() for worker in workers] == [None, None]  # both still serving
            text = log.read_text()
            assert "Redis is back" in text and "unhandled exception" not in text
    finally:
        for worker in workers:
            stop(worker)
        redis.stop()


def test_bad_jobs_fail_alone_and_workers_come_back_under_their_names(tmp_path, tiny_env):
    names = _photos(tmp_path, 1)
    redis = RedisServer(tmp_path)
    redis.start()
    log = tmp_path / "workers.log"
    workers = []
    try:
        with image_server(tmp_path / "photos") as (images_url, _):
            env = _env(redis.url, images_url, tiny_env)
            dispatcher = _dispatcher(env)
            faults = "tests.fault_worker"  # workers that also run tests.fault_jobs
            workers = [
                start_worker(env, log, name="w-a", module=faults),
                start_worker(env, log, name="w-b", module=faults),
            ]
            wait_for(lambda: _live(dispatcher) == 2, 120, "two workers")
            hopeless, killer, healthy = _requests(
                env, ["/never.jpg", "/kills.jpg", f"{images_url}/{names[0]}"]
            )

            # an error no re-run can fix: one run, then failed with its message
            dispatcher.job_function = "tests.fault_jobs.never_succeeds"
            (outcome,) = _ask(dispatcher, [hopeless], wait_s=30)
            assert outcome.reason == "failed: ValueError: k_patches must be at least 1"
            assert dispatcher.redis.get(f"test:runs:{hopeless.job_id}") == b"1"

            # a job that kills its worker: asked again as the backend would, it kills the
            # second worker too, then it is quarantined instead of queued a third time
            dispatcher.job_function = "tests.fault_jobs.kill_own_worker"

            def quarantined() -> bool:
                job = dispatcher.submit(killer)
                return job.get_status(refresh=True) == JobStatus.FAILED

            wait_for(quarantined, 90, "the quarantine", poll_s=0.2)
            assert [worker.wait(30) for worker in workers] == [-signal.SIGKILL] * 2
            wait_for(lambda: _live(dispatcher) == 0, 10, "dead workers leaving health")

            # a worker restarted under a dead worker's name starts and serves at once
            workers.append(start_worker(env, log, name="w-a", module=faults))
            wait_for(lambda: _live(dispatcher) == 1, 120, "w-a again")
            dispatcher.job_function = "zerolabel.queue.jobs.discover"
            quarantine, result = _ask(dispatcher, [killer, healthy], wait_s=60)
            assert quarantine.reason == f"failed: {QUARANTINE_REASON}"  # that task only
            assert result.result is not None and result.result.regions
            assert workers[-1].poll() is None and _live(dispatcher) == 1
    finally:
        for worker in workers:
            stop(worker)
        redis.stop()
