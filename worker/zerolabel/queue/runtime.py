"""A worker process's long-lived state: loaded models, image fetchers, the result cache.

What it adds to RQ: RQ runs a job's function anew each time; this state is built once per
process and every job reuses it, so a model is never reloaded per job. Discovery runs in two
stages so a worker can batch jobs (:mod:`zerolabel.queue.batch`): :meth:`load` (download,
decode, result-cache lookup: one image, any thread) and :meth:`compute` (one batched run of
many loaded images of one spec, on the device). :meth:`discover` chains them for one request,
in this process (no queue).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from redis import Redis
from redis.exceptions import RedisError
from rq.timeouts import BaseTimeoutException

from zerolabel import geometry, metrics
from zerolabel.contract import (
    DiscoveryRequest,
    DiscoveryResult,
    DiscoverySpec,
    PromptRequest,
    Region,
)
from zerolabel.errors import ConfigError, ImageLoadError, TransientFetchError, WeightsError
from zerolabel.io.fetch import Fetcher, FetchPolicy
from zerolabel.io.images import ImageLimits, LoadedImage
from zerolabel.pipeline import Discoverer, ModelStore, Runner
from zerolabel.prompting import FeatureCache, Seen, answer, feature_key
from zerolabel.queue.cache import ResultCache
from zerolabel.settings import WorkerSettings
from zerolabel.sites import LS_ALIASES_SETTING, LS_URL_SETTING, LabelStudioSite, parse_origin
from zerolabel.stages import Timings
from zerolabel.vit.backbone import Backbone, pick_device

logger = logging.getLogger(__name__)

LOCAL_ORIGIN = "local"
"""How the result cache names the origin of images read from local files."""

WORKER_BATCH_CUDA = 16
WORKER_BATCH_CPU = 1
"""Jobs a worker takes at once when ``ZEROLABEL_WORKER_BATCH`` is not set, by device."""


@dataclass(frozen=True)
class Loaded:
    """A request after :meth:`WorkerRuntime.load`: its image to run, or its finished result.

    Attributes:
        request: the request.
        image: the decoded image, when discovery must run on it.
        result: the answer already known (an image that cannot be read, a cached result).
        origin: where the image came from, for the result cache.
    """

    request: DiscoveryRequest
    image: LoadedImage | None = None
    result: DiscoveryResult | None = None
    origin: str = LOCAL_ORIGIN


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
        FetchPolicy.from_settings(settings, self.sites.primary)  # a bad folder fails at start
        self._local = threading.local()  # fetchers are not thread-safe: a set per thread
        self._all_fetchers: list[Fetcher] = []
        self._lock = threading.Lock()
        self.features = FeatureCache(settings.feature_cache_mb * 2**20)
        self._contents: dict[str, str] = {}  # image URL -> sha256 of what it served last

    def worker_batch(self) -> int:
        """Jobs a worker takes at once: ``ZEROLABEL_WORKER_BATCH``, else 16 on CUDA, 1 on CPU.

        A GPU runs a batch of 16 small images in little more than the time of one. A CPU spends
        about the same time per image at any batch size, and every job of a batch ends with the
        batch, so there one job at a time hands back results one by one; the next job's image is
        still downloaded while the current one runs.
        """
        if self.settings.worker_batch is not None:
            return self.settings.worker_batch
        cuda = pick_device(self.settings.device).type == "cuda"
        return WORKER_BATCH_CUDA if cuda else WORKER_BATCH_CPU

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
        fetchers: dict[str | None, Fetcher] | None = getattr(self._local, "fetchers", None)
        if fetchers is None:
            fetchers = self._local.fetchers = {}
        fetcher = fetchers.get(key)
        if fetcher is None:
            fetcher = fetchers[key] = self._new_fetcher(site)
            with self._lock:
                self._all_fetchers.append(fetcher)
        return fetcher

    def _site(self, request: DiscoveryRequest) -> LabelStudioSite | None:
        if not request.ls_url or not request.image.startswith("/"):
            return self.sites.primary
        site = self.sites.find(request.ls_url)
        if site is None:
            named = _origin(request.ls_url) or repr("<not an http(s) URL>")
            raise ConfigError(
                f"the task's image is on the Label Studio at {named}, "
                f"which is not the one this worker is configured for ({self.sites.describe()}); "
                f"set {LS_URL_SETTING} on the workers, or add it to {LS_ALIASES_SETTING} if it "
                "is another name for it"
            )
        return site

    def _new_fetcher(self, site: LabelStudioSite | None) -> Fetcher:
        budget_s = self.settings.fetch_timeout_s  # per job run; RQ does the re-runs
        return Fetcher(FetchPolicy.from_settings(self.settings, site, budget_s=budget_s))

    def close(self) -> None:
        """Close every kept fetcher of every thread (their HTTP connections); models stay."""
        with self._lock:
            fetchers, self._all_fetchers = self._all_fetchers, []
            self._local = threading.local()
        for fetcher in fetchers:
            fetcher.close()

    def discover(self, request: DiscoveryRequest) -> DiscoveryResult:
        """Fetch, look up the cache, run discovery, store the result.

        Raises:
            TransientFetchError: the image may be fetchable later (RQ retries the job).
        """
        loaded = self.load(request)
        if loaded.result is not None:
            return loaded.result
        (outcome,) = self.compute(request.spec, [loaded])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def load(self, request: DiscoveryRequest) -> Loaded:
        """Download and decode the request's image, and look up the result cache.

        Safe to call from several threads at once (each has its own fetchers).

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
            error = DiscoveryResult(request.image, (0, 0), [], version, request.task_id, str(exc))
            return Loaded(request, result=error)
        origin = _origin(image.source) or LOCAL_ORIGIN
        cached = self._cached(version, origin, image.sha256)
        if cached is not None:
            logger.info("task %s: served from the result cache", request.task_id)
            metrics.observe_cache_hit()
            found = dataclasses.replace(cached, source=request.image, task_id=request.task_id)
            return Loaded(request, result=found)
        return Loaded(request, image, origin=origin)

    def compute(
        self, spec: DiscoverySpec, loaded: Sequence[Loaded], timings: Timings | None = None
    ) -> list[DiscoveryResult | Exception]:
        """Run ``spec`` on the loaded images at once and store the results in the cache.

        Images of the same padded size share forward passes of up to ``ZEROLABEL_BATCH_SIZE``.
        When the batched run fails unexpectedly, each image is run alone, so only the image
        that fails gets the error.

        Args:
            spec: what runs.
            loaded: items whose image is loaded.
            timings: gains the seconds per stage of the run(s), when given.

        Returns:
            Per item, in order: its result, or the exception its run raised.
        """
        images = [item.image for item in loaded if item.image is not None]
        if len(images) != len(loaded):
            raise ValueError("compute() takes only items whose image is loaded")
        runner: Runner | None = None
        try:
            with metrics.failures():
                runner = self.runner(spec)
                if isinstance(runner, Discoverer):  # keep features for the clicks to come
                    runner.seen = functools.partial(self._seen, spec)
                with metrics.running(runner, images=len(images)):
                    regions = runner.run(images, self.settings.batch_size)
        except (WeightsError, ConfigError) as exc:
            logger.error("%s", exc)
            return [self._result(item, [], str(exc)) for item in loaded]
        except _TIMEOUTS:
            raise
        except Exception as exc:
            if len(loaded) == 1:
                return [exc]
            logger.warning("a batch of %d failed (%s); running its images alone", len(loaded), exc)
            return [outcome for item in loaded for outcome in self.compute(spec, [item], timings)]
        finally:
            spent = getattr(runner, "timings", None)  # stand-ins in tests may keep none
            if timings is not None and isinstance(spent, Timings):
                timings.add(spent)
        results: list[DiscoveryResult | Exception] = []
        for item, found in zip(loaded, regions, strict=True):
            result = self._result(item, found)
            self._store(result, item.origin, item.image.sha256 if item.image else "")
            results.append(result)
        return results

    def prompt(self, asked: PromptRequest) -> DiscoveryResult:
        """The object an annotator's prompt points at, from the image's cached features (one
        forward pass when the image is not in the cache).

        Returns:
            The result: one region, none when nothing was found, or the error (an image that
            cannot be read, a project served by a detector, a prompt with no object to find).

        Raises:
            TransientFetchError: the image may be fetchable later.
        """
        request, spec = asked.request, asked.request.spec
        version = spec.model_version()
        try:
            runner = self.runner(spec)
            if not isinstance(runner, Discoverer):
                raise ConfigError(f"prompts need a ViT method, not {spec.method!r}")
            seen = self._features(request, runner)
            region = answer(seen, asked.prompt, refined=spec.masks and spec.refine is not False)
        except (ImageLoadError, ConfigError, WeightsError, ValueError) as exc:
            logger.warning("task %s: prompt not answered: %s", request.task_id, exc)
            return DiscoveryResult(request.image, (0, 0), [], version, request.task_id, str(exc))
        regions = [region] if region is not None else []
        hw = seen.frame.original_hw
        return DiscoveryResult(request.image, hw, regions, version, request.task_id)

    def _features(self, request: DiscoveryRequest, runner: Discoverer) -> Seen:
        """The image's features: from the cache (by the content its URL served last), else a
        download and a forward pass."""
        spec = request.spec
        known = self._contents.get(request.absolute_image)
        seen = self.features.get(feature_key(spec, known)) if known else None
        if seen is not None:
            return seen
        image = self.fetcher(request).fetch(
            request.image, self.limits, max_side=spec.effective_max_side()
        )
        self._contents[request.absolute_image] = image.sha256
        if len(self._contents) > _MAX_URLS:
            self._contents.pop(next(iter(self._contents)))
        seen = self.features.get(feature_key(spec, image.sha256))
        if seen is None:
            frame, feat = runner.extract(image)
            seen = self._seen(spec, image, frame, feat)
        return seen

    def _seen(
        self, spec: DiscoverySpec, image: LoadedImage, frame: geometry.Frame, feat: Any
    ) -> Seen:
        """Keep an image's patch keys (on the CPU) for prompts."""
        keys = feat.k.detach().to("cpu", torch.float32)
        seen = Seen(frame, keys, image, bool(spec.square))
        self.features.put(feature_key(spec, image.sha256), seen)
        return seen

    def _result(
        self, item: Loaded, regions: list[Region], error: str | None = None
    ) -> DiscoveryResult:
        request = item.request
        hw = item.image.original_hw if item.image is not None else (0, 0)
        version = request.spec.model_version()
        return DiscoveryResult(request.image, hw, regions, version, request.task_id, error)

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


_MAX_URLS = 10_000
"""Image URLs whose content a worker remembers for prompts (the oldest forgotten first)."""

_TIMEOUTS = (BaseTimeoutException,)
"""RQ's job timeout: it ends the whole run, never a reason to run images one by one."""


def _origin(url: str) -> str | None:
    """``scheme://host:port`` of an http(s) URL (never its user info or path); else None."""
    origin = parse_origin(url)
    return str(origin) if origin is not None else None
