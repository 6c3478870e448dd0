"""Images in, regions out: preprocessing, batched forward pass, method, geometry.

The only place where the model, the pure discovery methods and the pixel geometry meet.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zerolabel import geometry
from zerolabel.contract import DiscoverySpec, Region
from zerolabel.discovery import METHODS
from zerolabel.io.images import LoadedImage
from zerolabel.vit import features, preprocess
from zerolabel.vit.backbone import Backbone

logger = logging.getLogger(__name__)

#: Longer-side cap per method when none is given: LOST/TokenCut run at (capped) full
#: resolution as in their papers; MaskCut at the 480 px its authors used, aspect preserved.
DEFAULT_MAX_SIDE = {"lost": 1024, "tokencut": 1024, "maskcut": 480}


def effective_max_side(spec: DiscoverySpec) -> int | None:
    """The cap actually applied: the spec's, else the method default; 0 means none."""
    side = DEFAULT_MAX_SIDE.get(spec.method) if spec.max_side is None else spec.max_side
    return side or None


@dataclass
class Timings:
    """Seconds spent per stage (accumulated over calls)."""

    preprocess_s: float = 0.0
    forward_s: float = 0.0
    method_s: float = 0.0
    images: int = 0


class Discoverer:
    """Runs one discovery spec with one loaded backbone."""

    def __init__(self, backbone: Backbone, spec: DiscoverySpec) -> None:
        self.backbone = backbone
        self.spec = spec
        self.method = METHODS[spec.method]  # KeyError for "cad": see make_discoverer
        self.max_side = effective_max_side(spec)
        self.model_version = spec.model_version()
        self.timings = Timings()

    def frame(self, image: LoadedImage) -> geometry.Frame:
        content = preprocess.content_size(image.original_hw, self.max_side, self.spec.square)
        return geometry.Frame(image.original_hw, content, self.backbone.patch_size)

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        """Regions for each image; images with the same padded size share a forward pass."""
        frames = [self.frame(image) for image in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, frame in enumerate(frames):
            groups[frame.padded_hw].append(index)
        results: list[list[Region]] = [[] for _ in images]
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                feats = self._forward([images[i] for i in chunk], [frames[i] for i in chunk])
                for i, feat in zip(chunk, feats, strict=True):
                    results[i] = self._regions(feat, frames[i])
        self.timings.images += len(images)
        return results

    def _forward(
        self, images: Sequence[LoadedImage], frames: Sequence[geometry.Frame]
    ) -> list[features.PatchFeatures]:
        start = time.perf_counter()
        mean, std = self.backbone.mean_std
        batch = torch.stack(
            [
                preprocess.to_input(im.pixels, fr, mean, std)
                for im, fr in zip(images, frames, strict=True)
            ]
        )
        self.timings.preprocess_s += time.perf_counter() - start
        start = time.perf_counter()
        feats = features.extract(self.backbone, batch)
        self._sync()
        self.timings.forward_s += time.perf_counter() - start
        return feats

    def _regions(self, feat: features.PatchFeatures, frame: geometry.Frame) -> list[Region]:
        start = time.perf_counter()
        objects = self.method(feat.k, feat.grid_hw, **self.spec.params)
        regions = []
        for obj in objects:
            patch_mask = obj.mask.cpu().numpy().astype(bool)
            box = geometry.patch_mask_to_box(patch_mask, frame)
            if box is None or box.width <= 0 or box.height <= 0:
                continue
            rle = None
            if self.spec.masks:
                rle = geometry.rle_encode(geometry.patch_mask_to_pixel_mask(patch_mask, frame))
            regions.append(Region(box, float(np.clip(obj.score, 0.0, 1.0)), self.spec.method, rle))
        self.timings.method_s += time.perf_counter() - start
        return regions

    def _sync(self) -> None:
        if self.backbone.device.type == "cuda":
            torch.cuda.synchronize(self.backbone.device)


class CadDiscoverer:
    """Serves a trained class-agnostic detector (``zerolabel train-cad``) like a method.

    Spec params: ``score_threshold`` (default 0.5) and ``max_detections`` (default 100).
    """

    def __init__(self, detector: torch.nn.Module, spec: DiscoverySpec) -> None:
        self.detector = detector
        self.spec = spec
        self.max_side: int | None = None  # the detector resizes its input itself
        self.model_version = spec.model_version()
        self.timings = Timings()
        self.params = {"score_threshold": 0.5, "max_detections": 100, **spec.params}

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        """Regions for each image (one forward pass per image)."""
        from zerolabel.cad import detect

        results = []
        for image in images:
            start = time.perf_counter()
            found = detect(self.detector, image, **self.params)
            regions = [
                Region(
                    box,
                    float(score),
                    "cad",
                    geometry.rle_encode(mask) if mask is not None and self.spec.masks else None,
                )
                for box, score, mask in found
            ]
            self.timings.forward_s += time.perf_counter() - start
            results.append(regions)
        self.timings.images += len(images)
        return results


def make_discoverer(
    spec: DiscoverySpec,
    *,
    backbone: Backbone | None = None,
    detector: torch.nn.Module | None = None,
) -> Discoverer | CadDiscoverer:
    """The runner for a spec: the detector for ``cad``, the backbone for feature methods."""
    if spec.method == "cad":
        if detector is None:
            raise ValueError("method 'cad' needs a detector")
        return CadDiscoverer(detector, spec)
    if backbone is None:
        raise ValueError(f"method {spec.method!r} needs a backbone")
    return Discoverer(backbone, spec)
