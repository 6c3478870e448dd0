"""Label Studio tasks -> queued discovery jobs -> one Label Studio entry per task.

Entries for tasks without a result carry no ``result`` key: Label Studio then stores no
prediction for them, so they are asked for again later instead of being marked done.

Nothing here carries a Label Studio token: requests name the configured Label Studio a relative
image URL belongs to, and workers download with their own ``LABEL_STUDIO_API_KEY``. The hostname
Label Studio sends to ``/setup`` is accepted only when it is ``LABEL_STUDIO_URL`` or one of
``ZEROLABEL_LABEL_STUDIO_ALIASES`` (:meth:`PredictionService.context`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
    """What Label Studio told us about a project in /setup; build it with
    :meth:`PredictionService.context`, which checks the hostname.

    It holds no credentials: workers download with their own ``LABEL_STUDIO_API_KEY``, and the
    token Label Studio sends to /setup is never kept or forwarded.

    Attributes:
        hostname: the configured Label Studio URL /setup named, for ``/data/...`` image URLs;
            None: ``LABEL_STUDIO_URL``.
        options: the project's extra params.
    """

    hostname: str | None = None
    options: ProjectOptions = field(default_factory=ProjectOptions)


class PredictionService:
    """Process-wide: one Redis connection and dispatcher for every request."""

    def __init__(self, settings: BackendSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.sites = settings.discovery.ls_sites()
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

    def context(self, hostname: str | None, options: ProjectOptions) -> ProjectContext:
        """The project context for a ``/setup`` call; its access token is never used.

        Args:
            hostname: the Label Studio URL /setup names: empty, ``LABEL_STUDIO_URL`` or one of
                ``ZEROLABEL_LABEL_STUDIO_ALIASES`` (origins compared, default ports filled in).
                Without ``LABEL_STUDIO_URL`` it is not kept: nothing may be sent there.
            options: the project's extra params.

        Raises:
            ConfigError: the hostname is not the configured Label Studio (the message names
                the configured URLs and how to add another name for it).
        """
        site = self.sites.check_hostname(hostname)
        return ProjectContext(site.url if site is not None else None, options)

    def predict(
        self, tasks: Sequence[dict[str, Any]], label_config: str, context: ProjectContext
    ) -> list[dict[str, Any]]:
        """Exactly one entry per task, in order.

        Raises:
            ConfigError: the labeling config cannot be served, or the context names a Label
                Studio that is not configured (see :meth:`context`).
        """
        target, spec = self.plan(label_config, context.options)
        version = spec.model_version()
        ls_url = self._ls_url(context)
        entries: list[dict[str, Any] | None] = [None] * len(tasks)
        requests: dict[int, DiscoveryRequest] = {}
        for index, task in enumerate(tasks):
            image = (task.get("data") or {}).get(target.data_key)
            if not isinstance(image, str) or not image:
                entries[index] = _no_result(task, f"task data has no '{target.data_key}' image URL")
                continue
            requests[index] = DiscoveryRequest(spec, image, task.get("id"), ls_url)
        outcomes = self._run(list(requests.values()))
        for index, outcome in zip(requests, outcomes, strict=True):
            entries[index] = self._entry(tasks[index], outcome, target, version)
        return [entry or {} for entry in entries]

    def _ls_url(self, context: ProjectContext) -> str | None:
        """The configured Label Studio URL the project's relative image URLs belong to.

        The hostname is checked again here, so a context built without :meth:`context` never
        sends a worker anywhere else. None without ``LABEL_STUDIO_URL``: workers then join
        relative URLs to their own, and answer a per-task error naming the setting if they
        have none.

        Raises:
            ConfigError: the context names a Label Studio that is not configured.
        """
        site = self.sites.check_hostname(context.hostname) or self.sites.primary
        return site.url if site is not None else None

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
