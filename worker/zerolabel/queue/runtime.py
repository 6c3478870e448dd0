"""A worker process's long-lived state: loaded models, image fetchers, the result cache.

Built once per process; every job reuses it, so a model is never reloaded per job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict

from redis import Redis
from redis.exceptions import RedisError

from zerolabel.contract import DiscoveryRequest, DiscoveryResult, DiscoverySpec
from zerolabel.errors import ConfigError, ImageLoadError, WeightsError
from zerolabel.io.fetch import Fetcher, FetchPolicy, TransientFetchError
from zerolabel.io.images import ImageLimits
from zerolabel.pipeline import ModelStore, Runner
from zerolabel.queue.dispatch import ResultCache
from zerolabel.settings import WorkerSettings
from zerolabel.vit.backbone import Backbone

logger = logging.getLogger(__name__)

MAX_FETCHERS = 8
"""Fetchers kept (one per Label Studio URL and token); the least recently used is closed."""


class WorkerRuntime:
    """Serves discovery requests with models loaded once."""

    def __init__(
        self,
        settings: WorkerSettings,
        redis: Redis | None = None,
        *,
        max_fetchers: int = MAX_FETCHERS,
    ) -> None:
        if max_fetchers < 1:
            raise ConfigError(f"max_fetchers must be at least 1, got {max_fetchers}")
        self.settings = settings
        self.redis = redis
        self.cache = ResultCache(redis, settings.queue.result_ttl_s) if redis else None
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.models = ModelStore(settings)
        self.max_fetchers = max_fetchers
        self._fetchers: OrderedDict[tuple[str | None, str | None], Fetcher] = OrderedDict()

    def backbone(self, spec: DiscoverySpec) -> Backbone:
        """The loaded backbone of a feature-method spec (loaded on first use, then kept)."""
        return self.models.backbone(spec)

    def runner(self, spec: DiscoverySpec) -> Runner:
        """What runs a spec, with its model loaded on first use and then kept."""
        return self.models.runner(spec)

    def fetcher(self, request: DiscoveryRequest) -> Fetcher:
        """The fetcher for the request's Label Studio URL and token (most recently used kept)."""
        ls_url = request.ls_url or self.settings.ls_url
        token = request.ls_token or self.settings.ls_token
        key = (ls_url, token)
        fetcher = self._fetchers.pop(key, None)
        if fetcher is None:
            fetcher = self._new_fetcher(ls_url, token)
        self._fetchers[key] = fetcher  # now the most recently used
        while len(self._fetchers) > self.max_fetchers:
            _, evicted = self._fetchers.popitem(last=False)
            evicted.close()
        return fetcher

    def _new_fetcher(self, ls_url: str | None, token: str | None) -> Fetcher:
        return Fetcher(
            FetchPolicy(
                ls_url=ls_url,
                ls_token=token,
                allowed_hosts=self.settings.allowed_hosts,
                allow_local_paths=bool(self.settings.local_roots),
                local_roots=self.settings.local_roots,
                timeout_s=self.settings.fetch_timeout_s,
                budget_s=self.settings.fetch_timeout_s,  # per job run; RQ does the re-runs
            )
        )

    def close(self) -> None:
        """Close every kept fetcher (their HTTP connections); models stay loaded."""
        while self._fetchers:
            self._fetchers.popitem()[1].close()

    def discover(self, request: DiscoveryRequest) -> DiscoveryResult:
        """Fetch, look up the cache, run discovery, store the result.

        Raises:
            TransientFetchError: the image may be fetchable later (RQ retries the job).
        """
        spec = request.spec
        version = spec.model_version()
        try:
            image = self.fetcher(request).fetch(
                request.image, self.limits, max_side=spec.effective_max_side()
            )
        except TransientFetchError:
            raise
        except (ImageLoadError, ConfigError) as exc:
            logger.warning("task %s: %s", request.task_id, exc)
            return DiscoveryResult(request.image, (0, 0), [], version, request.task_id, str(exc))
        cached = self._cached(version, image.sha256)
        if cached is not None:
            logger.info("task %s: served from the result cache", request.task_id)
            return dataclasses.replace(cached, source=request.image, task_id=request.task_id)
        try:
            regions = self.runner(spec).run([image])[0]
        except (WeightsError, ConfigError) as exc:
            logger.error("task %s: %s", request.task_id, exc)
            return DiscoveryResult(
                request.image, image.original_hw, [], version, request.task_id, str(exc)
            )
        result = DiscoveryResult(
            request.image, image.original_hw, regions, version, request.task_id
        )
        self._store(result, image.sha256)
        return result

    def _cached(self, version: str, sha256: str) -> DiscoveryResult | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(version, sha256)
        except RedisError as exc:
            logger.warning("result cache unavailable: %s", exc)
            return None

    def _store(self, result: DiscoveryResult, sha256: str) -> None:
        if self.cache is not None:
            try:
                self.cache.put(result, sha256)
            except RedisError as exc:
                logger.warning("result cache unavailable: %s", exc)
