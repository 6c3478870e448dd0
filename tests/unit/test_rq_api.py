"""The RQ the queue is built on: every RQ method it overrides or calls is still there, taking the
parameters it passes, and RQ's own cleanup of abandoned jobs reaches the worker's handlers.

``rq`` is pinned to the tested minor series (pyproject.toml); a newer RQ that renames or drops
one of these fails here, not in a worker.
"""

from __future__ import annotations

import inspect
import time
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from rq import Queue, Retry, SimpleWorker
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty
from rq.worker import BaseWorker
from zerolabel.queue.batch import BatchedJob
from zerolabel.queue.failures import retry_only_transient, strike_abandoned
from zerolabel.queue.runs import Runs
from zerolabel.queue.worker import OutageAwareQueue, ZerolabelWorker

OVERRIDDEN: list[tuple[type[Any], type[Any], set[str]]] = [
    (
        ZerolabelWorker,
        SimpleWorker,
        {
            "check_for_suspension",
            "dequeue_job_and_maintain_ttl",
            "execute_job",
            "handle_warm_shutdown_request",
            "heartbeat",
            "prepare_job_execution",
            "run_maintenance_tasks",
            "teardown",
        },
    ),
    (OutageAwareQueue, Queue, {"dequeue_any"}),
    (BatchedJob, Job, {"perform"}),
]
"""Our class, the RQ class it extends, and the RQ methods it overrides."""

CALLED: list[tuple[Any, str, tuple[str, ...]]] = [
    (BaseWorker, "prepare_execution", ("job",)),
    (BaseWorker, "prepare_job_execution", ("job", "remove_from_intermediate_queue")),
    (BaseWorker, "perform_job", ("job", "queue", "execution")),
    (BaseWorker, "cleanup_execution", ("job", "pipeline", "execution")),
    (BaseWorker, "register_death", ()),
    (BaseWorker, "set_state", ("state",)),
    (BaseWorker, "work", ("burst", "with_scheduler")),
    (BaseWorker, "__init__", ("queues", "name", "connection", "exception_handlers", "serializer")),
    (Queue, "enqueue", ("f",)),
    (
        Queue,
        "enqueue_call",
        ("job_id", "description", "timeout", "result_ttl", "failure_ttl", "retry"),
    ),
    (Queue, "enqueue_job", ("job", "at_front")),
    (Queue, "remove", ("job_or_id", "pipeline")),
    (Queue, "__init__", ("name", "connection", "serializer")),
    (Job, "fetch", ("id", "connection", "serializer")),
    (Job, "fetch_many", ("job_ids", "connection", "serializer")),
    (Job, "get_status", ("refresh",)),
    (Job, "return_value", ("refresh",)),
    (Job, "latest_result", ()),
    (Job, "delete", ()),
    (Job, "set_status", ("status",)),
    (IntermediateQueue, "get_job_ids", ()),
    (RQScheduler, "acquire_locks", ("auto_start",)),
    (BaseDeathPenalty, "__init__", ("timeout", "exception", "job_id")),
    (record_job_failure, "__call__", ("job", "exc_string", "pipeline")),
]
"""RQ callables the queue calls, with the parameters it passes (by name or position)."""

ATTRIBUTES: list[tuple[type[Any], tuple[str, ...]]] = [
    (BaseWorker, ("death_penalty_class", "queue_class", "job_class", "key")),
    (Queue, ("DEFAULT_TIMEOUT", "intermediate_queue", "intermediate_queue_key")),
    (Queue, ("started_job_registry", "key", "count", "job_ids", "jobs")),
    (Job, ("worker_name", "started_at", "func_name", "args", "retries_left", "key")),
]
"""RQ attributes and properties the queue reads."""


def _ids(entries: list[Any]) -> list[str]:
    return [
        f"{entry[0].__name__}.{entry[1]}" if isinstance(entry[1], str) else entry[0].__name__
        for entry in entries
    ]


@pytest.mark.parametrize(("ours", "base", "names"), OVERRIDDEN, ids=_ids(OVERRIDDEN))
def test_every_overridden_method_is_still_rqs_with_the_same_parameters(ours, base, names):
    for name in sorted(names):
        assert hasattr(base, name), f"RQ's {base.__name__}.{name} is gone"
        theirs = list(inspect.signature(getattr(base, name)).parameters)
        mine = list(inspect.signature(getattr(ours, name)).parameters)
        assert mine == theirs, f"{base.__name__}.{name}: RQ takes {theirs}"


@pytest.mark.parametrize(("ours", "base", "names"), OVERRIDDEN, ids=_ids(OVERRIDDEN))
def test_no_rq_method_is_overridden_unlisted(ours, base, names):
    own = {
        name
        for name, value in vars(ours).items()
        if inspect.isfunction(value) or isinstance(value, classmethod)
    }
    rqs = {name for name in own if hasattr(base, name) and not name.startswith("__")}
    assert rqs == names


@pytest.mark.parametrize(("owner", "name", "params"), CALLED, ids=_ids(CALLED))
def test_every_rq_callable_the_queue_calls_takes_its_parameters(owner, name, params):
    target = owner if name == "__call__" else getattr(owner, name, None)
    assert target is not None, f"RQ's {owner.__name__}.{name} is gone"
    try:
        inspect.signature(target).bind_partial(**dict.fromkeys(params))
    except TypeError as exc:
        pytest.fail(f"{owner.__name__}.{name} no longer takes {params}: {exc}")


@pytest.mark.parametrize(("owner", "names"), ATTRIBUTES)
def test_every_rq_attribute_the_queue_reads_is_there(owner, names):
    instance = _instance(owner)
    missing = [name for name in names if not hasattr(instance, name)]
    assert missing == [], f"RQ's {owner.__name__} lacks {missing}"


def _instance(owner: type[Any]) -> Any:
    redis = fakeredis.FakeRedis()
    if owner is Job:
        return Job.create(f"{__name__}.noop", connection=redis)
    queue = Queue("q", connection=redis)
    return queue if owner is Queue else SimpleWorker([queue], connection=redis)


def noop() -> None:
    """A job function; never run."""


def _dead_run(queue: Queue, job: Job, worker: str, began: float) -> None:
    """What a worker killed mid-run leaves in RQ: a started job whose execution has lapsed."""
    moment = datetime.fromtimestamp(began, UTC)
    with queue.connection.pipeline() as pipe:
        job.prepare_for_execution(worker, pipe)
        Execution.create(job, 1, pipe, worker_name=worker)
        pipe.execute()
    job.started_at = moment
    queue.connection.hset(job.key, "started_at", moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def test_rqs_cleanup_of_abandoned_jobs_strikes_each_death_then_fails_the_job():
    redis = fakeredis.FakeRedis()
    queue = Queue("q", connection=redis)
    runs = Runs(redis, ttl_s=60)
    handlers = [strike_abandoned(runs), retry_only_transient]  # what the worker registers
    job = queue.enqueue(f"{__name__}.noop", retry=Retry(max=5))
    states = []
    for death in range(2):
        queue.connection.lrem(queue.key, 0, job.id)  # dequeued, then its worker is killed
        _dead_run(queue, job, f"gone-{death}", began=1.6e9 + death)
        queue.started_job_registry.cleanup(time.time() + 3600, exception_handlers=handlers)
        job = Job.fetch(job.id, connection=redis)
        states.append((job.get_status(), runs.strikes(job.id)))
    # RQ queues it again after the first death; the second fails it, retries left or not
    assert states == [(JobStatus.QUEUED, 1), (JobStatus.FAILED, 2)]
    assert job.retries_left == 0 and queue.job_ids == []


def test_the_callback_names_a_refused_job_is_read_and_disarmed_by_are_rqs():
    from rq import Callback
    from zerolabel.queue.claims import _CALLBACK_NAMES, disarm, foreign

    redis = fakeredis.FakeRedis()
    queue = Queue("q", connection=redis)
    named = {"on_success": "a.b", "on_failure": "c.d", "on_stopped": "e.f"}
    job = queue.enqueue(f"{__name__}.noop", **{k: Callback(v) for k, v in named.items()})
    job = Job.fetch(job.id, connection=redis)  # as a worker reads it from Redis
    assert [getattr(job, attribute) for attribute in _CALLBACK_NAMES] == list(named.values())
    assert foreign(job, {f"{__name__}.noop"}) is not None
    disarm(job)
    assert job.success_callback is job.failure_callback is job.stopped_callback is None
