"""A worker process's long-lived state: loaded models, image fetchers, the result cache.

Built once per process; every job reuses it, so a model is never reloaded per job.
"""

from __future__ import annotations

import dataclasses
import logging

from redis import Redis
from redis.exceptions import RedisError

from zerolabel import metrics
from zerolabel.contract import DiscoveryRequest, DiscoveryResult, DiscoverySpec
from zerolabel.errors import ConfigError, ImageLoadError, WeightsError
from zerolabel.io.fetch import Fetcher, FetchPolicy, TransientFetchError
from zerolabel.io.images import ImageLimits
from zerolabel.labelstudio.auth import (
    LS_ALIASES_SETTING,
    LS_URL_SETTING,
    LabelStudioSite,
    parse_origin,
)
from zerolabel.pipeline import ModelStore, Runner
from zerolabel.queue.dispatch import ResultCache
from zerolabel.settings import WorkerSettings
from zerolabel.vit.backbone import Backbone

logger = logging.getLogger(__name__)

LOCAL_ORIGIN = "local"
"""How the result cache names the origin of images read from local files."""


class WorkerRuntime:
    """Serves discovery requests with models loaded once.

    Label Studio credentials come from the worker's own settings (``LABEL_STUDIO_API_KEY``),
    never from a request: there is one fetcher per configured Label Studio URL
    (``LABEL_STUDIO_URL`` and ``ZEROLABEL_LABEL_STUDIO_ALIASES``), so the number of fetchers, and
    of connection pools, is bounded by the configuration.
    """

    def __init__(self, settings: WorkerSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.cache = ResultCache(redis, settings.queue.result_ttl_s) if redis else None
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.models = ModelStore(settings)
        self.sites = settings.ls_sites()
        self._fetchers: dict[str | None, Fetcher] = {}

    def backbone(self, spec: DiscoverySpec) -> Backbone:
        """The loaded backbone of a feature-method spec (loaded on first use, then kept)."""
        return self.models.backbone(spec)

    def runner(self, spec: DiscoverySpec) -> Runner:
        """What runs a spec, with its model loaded on first use and then kept."""
        return self.models.runner(spec)

    def fetcher(self, request: DiscoveryRequest) -> Fetcher:
        """The fetcher for the configured Label Studio URL the request's image belongs to.

        A relative image URL is joined to the configured site whose origin ``request.ls_url``
        has (the primary one when the request names none); other images use the primary's.

        Raises:
            ConfigError: the request names a Label Studio this worker is not configured for.
        """
        site = self._site(request)
        key = site.url if site is not None else None
        fetcher = self._fetchers.get(key)
        if fetcher is None:
            fetcher = self._fetchers[key] = self._new_fetcher(site)
        return fetcher

    def _site(self, request: DiscoveryRequest) -> LabelStudioSite | None:
        if not request.ls_url or not request.image.startswith("/"):
            return self.sites.primary
        site = self.sites.find(request.ls_url)
        if site is None:
            raise ConfigError(
                f"the task's image is on the Label Studio at {_origin_text(request.ls_url)}, "
                f"which is not the one this worker is configured for ({self.sites.describe()}); "
                f"set {LS_URL_SETTING} on the workers, or add it to {LS_ALIASES_SETTING} if it "
                "is another name for it"
            )
        return site

    def _new_fetcher(self, site: LabelStudioSite | None) -> Fetcher:
        others = tuple(s.url for s in self.sites.sites if s != site)
        return Fetcher(
            FetchPolicy(
                ls_url=site.url if site is not None else None,
                ls_token=self.settings.ls_token if site is not None else None,
                ls_aliases=others if site is not None else (),
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
            with metrics.failures():
                image = self.fetcher(request).fetch(
                    request.image, self.limits, max_side=spec.effective_max_side()
                )
        except TransientFetchError:
            raise
        except (ImageLoadError, ConfigError) as exc:
            logger.warning("task %s: %s", request.task_id, exc)
            return DiscoveryResult(request.image, (0, 0), [], version, request.task_id, str(exc))
        origin = _image_origin(image.source)
        cached = self._cached(version, origin, image.sha256)
        if cached is not None:
            logger.info("task %s: served from the result cache", request.task_id)
            metrics.observe_cache_hit()
            return dataclasses.replace(cached, source=request.image, task_id=request.task_id)
        try:
            with metrics.failures():
                runner = self.runner(spec)
                with metrics.running(runner, images=1):
                    regions = runner.run([image])[0]
        except (WeightsError, ConfigError) as exc:
            logger.error("task %s: %s", request.task_id, exc)
            return DiscoveryResult(
                request.image, image.original_hw, [], version, request.task_id, str(exc)
            )
        result = DiscoveryResult(
            request.image, image.original_hw, regions, version, request.task_id
        )
        self._store(result, origin, image.sha256)
        return result

    def _cached(self, version: str, origin: str, sha256: str) -> DiscoveryResult | None:
        if self.cache is None:
            return None
        try:
            return self.cache.get(version, origin, sha256)
        except RedisError as exc:
            logger.warning("result cache unavailable: %s", exc)
            return None

    def _store(self, result: DiscoveryResult, origin: str, sha256: str) -> None:
        if self.cache is not None:
            try:
                self.cache.put(result, origin, sha256)
            except RedisError as exc:
                logger.warning("result cache unavailable: %s", exc)


def _image_origin(source: str) -> str:
    """``scheme://host:port`` of a downloaded image's URL, or :data:`LOCAL_ORIGIN`."""
    origin = parse_origin(source)
    if origin is None:
        return LOCAL_ORIGIN
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


def _origin_text(url: str) -> str:
    """The origin of a URL named by a request, for messages (never its user info or path)."""
    origin = parse_origin(url)
    if origin is None:
        return repr("<not an http(s) URL>")
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"
