"""A worker process's long-lived state: loaded backbones, image fetchers, the result cache.

Built once per process; every job reuses it, so the model is never reloaded per job.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from redis import Redis
from redis.exceptions import RedisError

from zerolabel.cad import load_detector
from zerolabel.contract import DiscoveryRequest, DiscoveryResult, DiscoverySpec
from zerolabel.errors import ConfigError, ImageLoadError, WeightsError
from zerolabel.io.fetch import Fetcher, FetchPolicy, TransientFetchError
from zerolabel.io.images import ImageLimits
from zerolabel.pipeline import CadDiscoverer, Discoverer, effective_max_side, make_discoverer
from zerolabel.queue.dispatch import ResultCache
from zerolabel.settings import WorkerSettings
from zerolabel.vit.backbone import Backbone, load_backbone, pick_device

logger = logging.getLogger(__name__)


class WorkerRuntime:
    """Serves discovery requests with models loaded once."""

    def __init__(self, settings: WorkerSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.cache = ResultCache(redis, settings.queue.result_ttl_s) if redis else None
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self._backbones: dict[tuple[str, str], Backbone] = {}
        self._fetchers: dict[tuple[str | None, str | None], Fetcher] = {}
        self._detector: torch.nn.Module | None = None

    def backbone(self, spec: DiscoverySpec) -> Backbone:
        """The loaded backbone for a spec (loaded on first use, then kept)."""
        key = (spec.backbone, spec.pos_embed)
        if key not in self._backbones:
            self._check_weights(spec)
            own = spec.backbone == self.settings.backbone
            self._backbones[key] = load_backbone(
                spec.backbone,
                checkpoint=self.settings.checkpoint if own else None,
                device=self.settings.device,
                half=self.settings.half,
                pos_embed=spec.pos_embed,
                model_kwargs=self.settings.backbone_kwargs if own else None,
                offline=self.settings.offline,
            )
        return self._backbones[key]

    def runner(self, spec: DiscoverySpec) -> Discoverer | CadDiscoverer:
        """What runs a spec: the kept detector for ``cad``, the kept backbone otherwise."""
        if spec.method != "cad":
            return make_discoverer(spec, backbone=self.backbone(spec))
        served = self.settings.spec(method="cad")  # ConfigError without a detector
        if served.weights != spec.weights or self.settings.cad_checkpoint is None:
            raise WeightsError(
                f"the request asks for detector {spec.weights!r} but this worker serves "
                f"{served.weights!r}: give backend and workers the same ZEROLABEL_CAD_CHECKPOINT"
            )
        if self._detector is None:
            self._detector, _ = load_detector(
                self.settings.cad_checkpoint, pick_device(self.settings.device)
            )
        return make_discoverer(spec, detector=self._detector)

    def _check_weights(self, spec: DiscoverySpec) -> None:
        own = spec.backbone == self.settings.backbone
        served = self.settings.weights if own else "hub"
        if spec.weights != served:
            raise WeightsError(
                f"the request asks for {spec.backbone} with weights {spec.weights!r} but this "
                f"worker has {served!r}: give backend and workers the same ZEROLABEL_BACKBONE, "
                "ZEROLABEL_CHECKPOINT and ZEROLABEL_WEIGHTS_TAG"
            )

    def fetcher(self, request: DiscoveryRequest) -> Fetcher:
        ls_url = request.ls_url or self.settings.ls_url
        token = request.ls_token or self.settings.ls_token
        key = (ls_url, token)
        if key not in self._fetchers:
            self._fetchers[key] = Fetcher(
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
        return self._fetchers[key]

    def discover(self, request: DiscoveryRequest) -> DiscoveryResult:
        """Fetch, look up the cache, run discovery, store the result.

        Raises:
            TransientFetchError: the image may be fetchable later (RQ retries the job).
        """
        spec = request.spec
        version = spec.model_version()
        try:
            image = self.fetcher(request).fetch(
                request.image, self.limits, max_side=effective_max_side(spec)
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
