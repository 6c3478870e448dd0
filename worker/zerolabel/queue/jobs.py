"""RQ entry points, enqueued by string reference (``zerolabel.queue.jobs.discover``)."""

from __future__ import annotations

import functools
from typing import Any

from rq import get_current_job

from zerolabel.contract import DiscoveryRequest
from zerolabel.queue.dispatch import connect, lease
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings


@functools.cache
def get_runtime() -> WorkerRuntime:
    """The process's runtime, built from the environment on first use and then kept."""
    settings = WorkerSettings.from_env()
    return WorkerRuntime(settings, connect(settings.queue))


def discover(request: dict[str, Any]) -> dict[str, Any]:
    """Discover objects in one image; returns a ``DiscoveryResult`` as a dict."""
    parsed = DiscoveryRequest.from_dict(request)
    runtime = get_runtime()
    job = get_current_job()
    assert runtime.redis is not None
    with lease(runtime.redis, job.id if job else None, runtime.settings.queue.lease_s):
        return runtime.discover(parsed).to_dict()
