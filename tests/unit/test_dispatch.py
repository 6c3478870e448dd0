"""Liveness records, dead runs, the quarantine and transient-only retries, on fakeredis."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import fakeredis
import pytest
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import utcformat
from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.errors import QuarantinedJobError, TransientFetchError, WorkerNameInUse
from zerolabel.queue.dispatch import JOB_FUNCTION, Dispatcher
from zerolabel.queue.heartbeat import (
    Beat,
    Heartbeat,
    beat_of,
    heartbeat_key,
    heartbeat_ttl,
    live_workers,
)
from zerolabel.queue.outage import wait_for_redis
from zerolabel.queue.runs import QUARANTINE_REASON, Runs
from zerolabel.queue.worker import is_transient, run_worker
from zerolabel.settings import QueueSettings

SETTINGS = QueueSettings(queue="zerolabel", lease_s=2, retries=2)
CALLS: list[str] = []


def never_succeeds(name: str) -> None:
    CALLS.append(name)
    raise ValueError(f"k_patches must be positive ({name})")


def network_down(name: str) -> None:
    CALLS.append(name)
    raise TransientFetchError("http://images/a.png", "timed out after 20 s")


def fine(name: str) -> str:
    CALLS.append(name)
    return name


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    CALLS.clear()
    return fakeredis.FakeRedis()


def _queue(redis: fakeredis.FakeRedis) -> Queue:
    return Queue(SETTINGS.queue, connection=redis, serializer=JSONSerializer)


TEST_FUNCTIONS = [f"{__name__}.{name}" for name in ("never_succeeds", "network_down", "fine")]


def _work(redis: fakeredis.FakeRedis, name: str = "w1") -> None:
    functions = [JOB_FUNCTION, *TEST_FUNCTIONS]  # the worker runs only the functions it is given
    run_worker(redis, SETTINGS, name=name, burst=True, with_scheduler=False, functions=functions)


# --- heartbeats --------------------------------------------------------------------------------


def test_health_counts_live_heartbeats_of_its_queue_only(redis):
    dispatcher = Dispatcher(redis, SETTINGS)
    assert dispatcher.health()["workers"] == 0
    with Heartbeat(redis, "a", "zerolabel", 5), Heartbeat(redis, "b", "other-queue", 5):
        assert dispatcher.health()["workers"] == 1
        assert {beat.name for beat in live_workers(redis)} == {"a", "b"}
    assert dispatcher.health()["workers"] == 0  # a worker that exits takes its heartbeat along


def test_a_name_held_by_a_live_heartbeat_is_refused(redis):
    with Heartbeat(redis, "same", "zerolabel", 1):
        with pytest.raises(WorkerNameInUse, match="'same'"):
            Heartbeat(redis, "same", "zerolabel", 1).claim(poll_s=0.05)


def test_a_name_whose_heartbeat_lapsed_is_taken_over(redis):
    redis.set("zerolabel:worker:w1", b"from a dead process", ex=1)
    with Heartbeat(redis, "w1", "zerolabel", 1) as beat:  # waits for the old key to lapse
        assert [b.instance for b in live_workers(redis)] == [beat.instance]


def test_heartbeats_lapse_no_later_than_leases():
    assert heartbeat_ttl(15) == 5 and heartbeat_ttl(2) == 2


def test_a_worker_that_stopped_renewing_leaves_health_before_its_jobs_are_given_up(redis):
    beat = Beat("w1", "zerolabel", "dead", 1, "host", ("job",), ttl_s=5, lease_s=15)
    redis.set(heartbeat_key("w1"), beat.dumps(), px=15_000 - 6_000)  # renewed 6 s ago
    assert live_workers(redis) == []  # gone from health, and its name is free
    job = _started(redis, "w1")
    assert Runs(redis, 60).alive(job)  # its job is not given up before ZEROLABEL_LEASE_S
    with Heartbeat(redis, "w1", "zerolabel", 5, lease_s=15) as again:  # restarted under its name
        assert [b.instance for b in live_workers(redis)] == [again.instance]
        assert not Runs(redis, 60).alive(job)  # the new process does not hold the old job


# --- dead runs and the quarantine ---------------------------------------------------------------


def _started(
    redis: fakeredis.FakeRedis, worker: str, began: float = 1.6e9, job_id: str = "job"
) -> Job:
    """A job as RQ leaves it while ``worker`` runs it (its run began at ``began``, Unix time)."""
    job = Job.create(f"{__name__}.fine", args=("x",), id=job_id, connection=redis)
    job.save()
    job.set_status(JobStatus.STARTED)
    moment = utcformat(datetime.fromtimestamp(began, UTC))
    redis.hset(job.key, mapping={"worker_name": worker, "started_at": moment})
    return Job.fetch(job_id, connection=redis)


def test_runs_of_dead_workers_are_struck_once_each_then_quarantined(redis):
    runs = Runs(redis, ttl_s=60)
    dead = _started(redis, "gone")
    assert runs.settle(dead) == 1
    assert runs.settle(dead) == 1  # the same dead run is counted once
    again = _started(redis, "gone-too", began=1.6e9 + 60)
    assert runs.settle(again) == 2
    with pytest.raises(QuarantinedJobError, match="quarantined: the job stopped its worker twice"):
        runs.check("job")
    assert runs.strikes("job") == 2 and runs.quarantined("job")


def test_a_run_of_a_live_worker_is_not_struck(redis):
    runs = Runs(redis, ttl_s=60)
    with Heartbeat(redis, "alive", "zerolabel", 5) as beat:
        beat.hold(["job"])
        job = _started(redis, "alive")
        assert runs.alive(job) and runs.settle(job) == 0
        beat.release("job")
        assert not runs.alive(job)


class _RestartedRedis(fakeredis.FakeRedis):
    """fakeredis with the uptime INFO reports (fakeredis has no INFO)."""

    uptime_s = 0

    def info(self, section: object = None, *args: object, **kwargs: object) -> dict[str, int]:
        return {"uptime_in_seconds": self.uptime_s}


@pytest.mark.parametrize(
    ("began_s_ago", "uptime_s", "struck"),
    [
        pytest.param(60, 5, 0, id="began-before-a-restart-moments-ago"),
        pytest.param(60, 100, 1, id="restart-long-ago"),
        pytest.param(1, 5, 1, id="began-after-the-restart"),
    ],
)
def test_missing_heartbeats_right_after_a_redis_restart_are_not_deaths(
    began_s_ago, uptime_s, struck
):
    redis = _RestartedRedis()
    redis.uptime_s = uptime_s
    seconds, _ = redis.time()
    job = _started(redis, "w1", began=seconds - began_s_ago)  # no record holds it
    runs = Runs(redis, ttl_s=60)
    assert runs.alive(job) == (struck == 0) and runs.settle(job) == struck


def _request(n: int = 1) -> DiscoveryRequest:
    return DiscoveryRequest(DiscoverySpec(), f"/data/upload/1/{n}.jpg", n)


def _lose_worker_mid_run(redis: fakeredis.FakeRedis, job: Job, worker: str) -> None:
    """What a worker killed mid-job leaves: a job started by it, no live record holding it."""
    job.set_status(JobStatus.STARTED)
    redis.hset(job.key, mapping={"worker_name": worker, "started_at": "2020-01-01T00:00:00Z"})
    assert beat_of(redis, worker) is None


def test_a_job_that_stopped_its_worker_twice_is_failed_not_queued_again(redis):
    dispatcher = Dispatcher(redis, SETTINGS)
    request, other = _request(1), _request(2)
    _lose_worker_mid_run(redis, dispatcher.submit(request), "w1")
    again = dispatcher.submit(request)  # first death: queued again
    assert again.get_status() == JobStatus.QUEUED and dispatcher.runs.strikes(request.job_id) == 1
    _lose_worker_mid_run(redis, again, "w2")
    quarantined = dispatcher.submit(request)  # second death: failed
    healthy = dispatcher.submit(other)
    outcomes = dispatcher.collect([quarantined, healthy], timeout_s=0.2)
    assert outcomes[0].result is None
    assert outcomes[0].reason == f"failed: {QUARANTINE_REASON}"
    assert outcomes[1].reason and outcomes[1].reason.startswith("late")  # other tasks unaffected
    assert dispatcher.submit(request).get_status() == JobStatus.FAILED  # and it stays failed
    assert _queue(redis).job_ids == [other.job_id]


def test_a_started_job_whose_worker_lives_is_left_running(redis):
    dispatcher = Dispatcher(redis, SETTINGS)
    request = _request()
    job = dispatcher.submit(request)
    with Heartbeat(redis, "busy", "zerolabel", 5) as beat:
        beat.hold([job.id])
        job.set_status(JobStatus.STARTED)
        redis.hset(job.key, mapping={"worker_name": "busy", "started_at": "2020-01-01T00:00:00Z"})
        assert dispatcher.submit(request).get_status() == JobStatus.STARTED
    assert dispatcher.runs.strikes(request.job_id) == 0


# --- the worker: transient-only retries, the quarantine at pick-up ------------------------------


def test_errors_that_cannot_succeed_run_once_transient_ones_use_the_retries(redis):
    queue = _queue(redis)
    bad = queue.enqueue(f"{__name__}.never_succeeds", "bad", retry=Retry(max=2))
    flaky = queue.enqueue(f"{__name__}.network_down", "flaky", retry=Retry(max=2))
    good = queue.enqueue(f"{__name__}.fine", "good", retry=Retry(max=2))
    _work(redis)
    assert CALLS.count("bad") == 1 and CALLS.count("flaky") == 3 and CALLS.count("good") == 1
    assert bad.get_status(refresh=True) == flaky.get_status(refresh=True) == JobStatus.FAILED
    assert "ValueError: k_patches must be positive (bad)" in bad.latest_result().exc_string
    assert good.get_status(refresh=True) == JobStatus.FINISHED and good.return_value() == "good"
    assert not redis.keys("zerolabel:run:*")  # every run's record is gone with it


def test_a_job_naming_another_function_fails_without_anything_it_names_being_run(
    redis, tmp_path, caplog
):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    queue = _queue(redis)
    removal = queue.enqueue("os.remove", str(victim))  # written by whoever reaches Redis
    unlisted = queue.enqueue(f"{__name__}.record", "unlisted")  # importable, but not served
    with caplog.at_level(logging.WARNING, logger="zerolabel.queue.worker"):
        _work(redis)
    assert victim.read_text() == "still here" and CALLS == []
    for job, name in ((removal, "os.remove"), (unlisted, f"{__name__}.record")):
        assert job.get_status(refresh=True) == JobStatus.FAILED
        assert f"ForeignJobError: job {job.id} refused: it names the function {name!r}" in (
            job.latest_result().exc_string
        )
        assert f"job {job.id} refused without running" in caplog.text


def test_a_discovery_job_that_names_callbacks_runs_neither_the_job_nor_its_callbacks(redis):
    queue = _queue(redis)
    hooked = queue.enqueue(
        JOB_FUNCTION,
        _request().to_dict(),
        on_success=Callback(f"{__name__}.record"),
        on_failure=Callback(f"{__name__}.record"),
    )
    _work(redis)
    assert CALLS == [] and hooked.get_status(refresh=True) == JobStatus.FAILED
    assert "which this worker does not run" in hooked.latest_result().exc_string


def record(*args: object) -> None:
    """A function the test worker does not serve; it would note that it ran."""
    CALLS.append("record")


def test_a_quarantined_job_is_failed_at_pick_up_without_running(redis):
    job = _queue(redis).enqueue(f"{__name__}.fine", "killer", retry=Retry(max=2))
    runs = Runs(redis, 60)
    for n in range(2):  # two runs that died with their workers
        job.worker_name, job.started_at = f"dead-{n}", datetime.fromtimestamp(1.6e9 + n, UTC)
        runs.strike(job)
    _work(redis)
    assert CALLS == [] and job.get_status(refresh=True) == JobStatus.FAILED
    assert QUARANTINE_REASON in job.latest_result().exc_string


def test_a_stale_registration_of_a_dead_worker_does_not_block_its_name(redis):
    from rq import SimpleWorker

    SimpleWorker([_queue(redis)], connection=redis, name="w1").register_birth()  # then killed
    _queue(redis).enqueue(f"{__name__}.fine", "after restart")
    _work(redis, name="w1")
    assert CALLS == ["after restart"]


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientFetchError("u", "HTTP 503 Service Unavailable"), True),
        (RedisConnectionError("Connection refused"), True),
        (ValueError("k_patches"), False),
        (TypeError("bad argument"), False),
        (QuarantinedJobError(QUARANTINE_REASON), False),
    ],
)
def test_which_failures_are_transient(exc, transient):
    assert is_transient(exc) is transient


# --- waiting for Redis -------------------------------------------------------------------------


class _FlakyPing:
    def __init__(self, failures: int) -> None:
        self.failures = failures

    def ping(self) -> bool:
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Connection refused")
        return True


def test_waiting_for_redis_backs_off_to_a_cap_and_logs_once_each_way(caplog):
    caplog.set_level(logging.INFO, logger="zerolabel.queue.outage")
    pauses: list[float] = []
    redis = _FlakyPing(failures=6)
    back = wait_for_redis(
        redis,  # type: ignore[arg-type]
        RedisConnectionError("Connection reset by peer"),
        backoff=ExponentialBackoff(cap=4, base=0.5),
        sleep=pauses.append,
    )
    assert back and pauses == [0.5, 1, 2, 4, 4, 4, 4]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2  # one line when it goes, one when it is back: none per retry
    assert messages[0].startswith("Redis unreachable (ConnectionError: Connection reset by peer)")
    assert messages[1].startswith("Redis is back after")


def test_waiting_for_redis_ends_when_the_worker_is_asked_to_stop():
    stop = iter([False, False, True])
    back = wait_for_redis(
        _FlakyPing(failures=100),  # type: ignore[arg-type]
        RedisConnectionError("Connection refused"),
        should_stop=lambda: next(stop),
        sleep=lambda s: None,
    )
    assert back is False


def test_waiting_reads_the_statuses_of_all_pending_jobs_in_one_round_trip(redis, monkeypatch):
    dispatcher = Dispatcher(redis, SETTINGS)
    jobs = [dispatcher.submit(_request(n)) for n in range(10)]  # queued, no worker
    looks: list[int] = []
    statuses = dispatcher._statuses

    def counted(pending):
        looks.append(len(pending))
        return statuses(pending)

    monkeypatch.setattr(dispatcher, "_statuses", counted)
    monkeypatch.setattr(Job, "get_status", lambda *a, **k: pytest.fail("one call per job"))
    outcomes = dispatcher.collect(jobs, timeout_s=0.3)
    assert [o.reason for o in outcomes] == ["late: still running, ask again"] * 10
    assert len(looks) > 1 and set(looks) == {10}  # every look asks for all ten at once
