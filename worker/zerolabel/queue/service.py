"""Label Studio tasks -> queued discovery jobs -> one Label Studio entry per task.

Entries for tasks without a result carry no ``result`` key: Label Studio then stores no
prediction for them, so they are asked for again later instead of being marked done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from zerolabel.contract import DiscoveryRequest, DiscoverySpec
from zerolabel.labelstudio import tasks as ls_format
from zerolabel.labelstudio.label_config import find_target
from zerolabel.labelstudio.options import ProjectOptions
from zerolabel.queue.dispatch import Dispatcher, Outcome, connect
from zerolabel.settings import BackendSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectContext:
    """What Label Studio told us about a project in /setup."""

    hostname: str | None = None  # Label Studio URL, for /data/... image URLs
    access_token: str | None = None  # never logged
    options: ProjectOptions = ProjectOptions()

    def __repr__(self) -> str:
        return f"ProjectContext(hostname={self.hostname!r}, options={self.options!r})"


class PredictionService:
    """Process-wide: one Redis connection and dispatcher for every request."""

    def __init__(self, settings: BackendSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.dispatcher = Dispatcher(
            redis or connect(settings.discovery.queue), settings.discovery.queue
        )

    def plan(
        self, label_config: str, options: ProjectOptions
    ) -> tuple[ls_format.Target, DiscoverySpec]:
        """Where regions go and what runs; ConfigError when the config cannot be served."""
        target = find_target(label_config, label=options.label or self.settings.label)
        spec = options.spec(self.settings, masks=target.brush_from_name is not None)
        return target, spec

    def model_version(self, label_config: str, options: ProjectOptions) -> str:
        return self.plan(label_config, options)[1].model_version()

    def predict(
        self, tasks: Sequence[dict[str, Any]], label_config: str, context: ProjectContext
    ) -> list[dict[str, Any]]:
        """Exactly one entry per task, in order."""
        target, spec = self.plan(label_config, context.options)
        version = spec.model_version()
        entries: list[dict[str, Any] | None] = [None] * len(tasks)
        requests: dict[int, DiscoveryRequest] = {}
        for index, task in enumerate(tasks):
            image = (task.get("data") or {}).get(target.data_key)
            if not isinstance(image, str) or not image:
                entries[index] = _no_result(task, f"task data has no '{target.data_key}' image URL")
                continue
            requests[index] = DiscoveryRequest(
                spec,
                image,
                task.get("id"),
                context.hostname or self.settings.discovery.ls_url,
                context.access_token or self.settings.discovery.ls_token,
            )
        outcomes = self._run(list(requests.values()))
        for index, outcome in zip(requests, outcomes, strict=True):
            entries[index] = self._entry(tasks[index], outcome, target, version)
        return [entry or {} for entry in entries]

    def _run(self, requests: list[DiscoveryRequest]) -> list[Outcome]:
        if not requests:
            return []
        try:
            jobs = [self.dispatcher.submit(request) for request in requests]
            return self.dispatcher.collect(jobs, self.settings.wait_timeout_s)
        except (RedisError, OSError) as exc:
            reason = f"Redis unreachable at {self.settings.discovery.queue.redis_url}: {exc}"
            logger.error("%d task(s) left without predictions: %s", len(requests), reason)
            return [Outcome(None, reason) for _ in requests]

    def _entry(
        self, task: dict[str, Any], outcome: Outcome, target: ls_format.Target, version: str
    ) -> dict[str, Any]:
        result = outcome.result
        if result is None:
            return _no_result(task, outcome.reason or "no result")
        if result.error:
            return _no_result(task, result.error)
        return ls_format.prediction(replace(result, model_version=version), target)

    def health(self) -> dict[str, Any]:
        return self.dispatcher.health()


def _no_result(task: dict[str, Any], reason: str) -> dict[str, Any]:
    logger.warning("task %s: no prediction: %s", task.get("id"), reason)
    return {"error": reason}
