"""Images in, regions out: preprocessing, batched forward pass, method, geometry.

The only place where the models, the pure discovery methods and the pixel geometry meet. Every
caller runs a spec through the :class:`Runner` protocol; :class:`ModelStore` builds the runner a
spec's method kind needs (see :mod:`zerolabel.methods`), so no caller names a method.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import torch

from zerolabel import geometry, methods, model_files, quality, refine
from zerolabel.contract import Box, DiscoverySpec, Region
from zerolabel.discovery import FUNCTIONS
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.fitted import Fitted, load_fitted
from zerolabel.io.images import LoadedImage
from zerolabel.methods import MethodKind
from zerolabel.stages import Timings
from zerolabel.vit import features, preprocess
from zerolabel.vit.backbone import Backbone, load_backbone, pick_device

if TYPE_CHECKING:
    from zerolabel.settings import WorkerSettings

logger = logging.getLogger(__name__)

_Key = TypeVar("_Key", bound=Hashable)
_Model = TypeVar("_Model")


class Runner(Protocol):
    """Runs one spec with its loaded model: what the CLI, the worker and benchmarks call."""

    spec: DiscoverySpec
    model_version: str
    max_side: int | None  # longer-side cap to load images at; None: full resolution
    timings: Timings

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        """Regions for each image, in order."""
        ...


class Discoverer:
    """Runs a feature method with one loaded ViT backbone (and its fitted file, if it uses one).

    The method gets the patch keys, the inputs its registry entry asks for (``attention``: the
    CLS-to-patch attention per head; ``tokens``: the last block's output patch tokens) and the
    fitted file's tensors and arguments, as keyword arguments. A mask may come on a finer grid
    of whole cells per patch (rps's paper rule), and a class label with it. A region's score
    is :func:`zerolabel.quality.region_score` of its patch mask. When the spec
    refines masks, each mask is refined on the resized image the network saw and its box is
    the refined mask's (:mod:`zerolabel.refine`).
    """

    def __init__(
        self, backbone: Backbone, spec: DiscoverySpec, fitted: Fitted | None = None
    ) -> None:
        if spec.method not in FUNCTIONS:
            raise ConfigError(f"method {spec.method!r} does not run on ViT features")
        if (fitted is None) != (spec.fitted is None):
            raise ConfigError(
                f"spec fitted file {spec.fitted!r} and the loaded one "
                f"{fitted.file_name() if fitted else None!r} disagree"
            )
        self.backbone = backbone
        self.spec = spec
        self.method = FUNCTIONS[spec.method]
        self.inputs = methods.get(spec.method).inputs
        self.fitted = fitted.method_arguments(backbone.device) if fitted else {}
        self.max_side = spec.effective_max_side()
        self.refine = spec.effective_refine()
        self.model_version = spec.model_version()
        self.timings = Timings()
        self.seen: Callable[[LoadedImage, geometry.Frame, features.PatchFeatures], object] | None
        self.seen = None  # told every image's features (the worker's cache for prompts)

    def frame(self, image: LoadedImage) -> geometry.Frame:
        content = preprocess.content_size(image.original_hw, self.max_side, self.spec.square)
        patch, crop = self.backbone.patch_size, self.spec.effective_crop()
        return geometry.Frame(image.original_hw, content, patch, crop=crop)

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
                    if self.seen is not None:
                        self.seen(images[i], frames[i], feat)
                    results[i] = self._regions(feat, frames[i], images[i])
        self.timings.images += len(images)
        return results

    def extract(self, image: LoadedImage) -> tuple[geometry.Frame, features.PatchFeatures]:
        """One image's frame and patch features (a forward pass, no method)."""
        frame = self.frame(image)
        return frame, self._forward([image], [frame])[0]

    def _forward(
        self, images: Sequence[LoadedImage], frames: Sequence[geometry.Frame]
    ) -> list[features.PatchFeatures]:
        start = time.perf_counter()
        mean, std = self.backbone.mean_std
        batch = torch.stack(
            [
                preprocess.to_input(im.pixels, fr, mean, std, square=bool(self.spec.square))
                for im, fr in zip(images, frames, strict=True)
            ]
        )
        if self.backbone.device.type == "cuda":
            batch = batch.pin_memory()  # lets extract() copy it without blocking the host
        self.timings.preprocess_s += time.perf_counter() - start
        start = time.perf_counter()
        feats = features.extract(self.backbone, batch)
        self._sync()
        self.timings.forward_s += time.perf_counter() - start
        return feats

    def _regions(
        self, feat: features.PatchFeatures, frame: geometry.Frame, image: LoadedImage
    ) -> list[Region]:
        start, refined_before = time.perf_counter(), self.timings.refine_s
        extra: dict[str, Any] = dict(self.fitted)
        if "attention" in self.inputs:
            extra["attention"] = feat.cls_attention
        if "tokens" in self.inputs:
            extra["tokens"] = feat.tokens
        objects = self.method(feat.k, feat.grid_hw, **extra, **self.spec.params)
        content = self._content(image, frame) if self.refine and objects else None
        regions = []
        for obj in objects:
            if obj.score <= 0.0:
                continue  # no structure (a constant image): the mask is arbitrary, not an object
            patch_mask = obj.mask.cpu().numpy().astype(bool)
            cells = _cell_frame(frame, patch_mask.shape)
            if content is None:
                pixel_mask, box = None, geometry.patch_mask_to_box(patch_mask, cells)
            else:
                pixel_mask, box = self._refined(content, patch_mask, cells)
            if box is None or box.width <= 0 or box.height <= 0:
                continue
            rle = None
            if self.spec.masks:
                if pixel_mask is None:
                    pixel_mask = geometry.patch_mask_to_pixel_mask(patch_mask, cells)
                rle = geometry.rle_encode(pixel_mask)
            score = quality.region_score(patch_mask, float(np.clip(obj.score, 0.0, 1.0)))
            regions.append(Region(box, score, self.spec.method, rle, obj.label))
        refine_s = self.timings.refine_s - refined_before
        self.timings.method_s += time.perf_counter() - start - refine_s
        return regions

    def _content(self, image: LoadedImage, frame: geometry.Frame) -> npt.NDArray[np.uint8]:
        """The image as the network saw it, before normalisation (what refinement works on)."""
        start = time.perf_counter()
        pixels = preprocess.resized(image.pixels, frame, square=bool(self.spec.square))
        self.timings.refine_s += time.perf_counter() - start
        return pixels

    def _refined(
        self,
        content: npt.NDArray[np.uint8],
        patch_mask: npt.NDArray[np.bool_],
        frame: geometry.Frame,
    ) -> tuple[npt.NDArray[np.bool_] | None, Box | None]:
        """The refined pixel mask and its box; (None, None) when the refinement drops it."""
        start = time.perf_counter()
        pixel_mask = refine.refine_patch_mask(content, patch_mask, frame)
        self.timings.refine_s += time.perf_counter() - start
        if pixel_mask is None:
            return None, None  # the CRF disagrees with the cut: MaskCut drops the mask
        return pixel_mask, geometry.mask_to_box(pixel_mask)

    def _sync(self) -> None:
        if self.backbone.device.type == "cuda":
            torch.cuda.synchronize(self.backbone.device)


def _cell_frame(frame: geometry.Frame, mask_hw: tuple[int, ...]) -> geometry.Frame:
    """``frame`` for a mask on the patch grid; for a mask of ``c x c`` cells per patch, the same
    frame with cells of ``patch_size / c`` pixels.

    Raises:
        ConfigError: a mask of another shape (a method's fault, named with the shapes).
    """
    gh, gw = frame.grid_hw
    cells = mask_hw[0] // gh
    if tuple(mask_hw) == (gh, gw):
        return frame
    if cells < 2 or tuple(mask_hw) != (gh * cells, gw * cells) or frame.patch_size % cells:
        raise ConfigError(
            f"a method returned a {tuple(mask_hw)} mask for a {gh} x {gw} patch grid of "
            f"{frame.patch_size} px patches: masks are on the grid or whole cells per patch"
        )
    if frame.crop:
        raise ConfigError("masks finer than the patch grid need a padded input, not a cropped one")
    return geometry.Frame(frame.original_hw, frame.content_hw, frame.patch_size // cells)


class DetectorRunner:
    """Serves a trained class-agnostic detector (``zerolabel train-cad``) like a method.

    Its parameters (threshold, detections per image) and their defaults are registered in
    :mod:`zerolabel.methods`; the detector resizes images itself, so they are loaded at full
    resolution unless the spec caps them. A region's score is the detector's confidence
    rescaled from ``[score_threshold, 1]`` to [0, 1]
    (:func:`zerolabel.cad.inference.rescaled_confidence`).
    """

    def __init__(self, detector: torch.nn.Module, spec: DiscoverySpec) -> None:
        info = methods.get(spec.method)
        if info.kind is not MethodKind.DETECTOR:
            raise ConfigError(f"method {spec.method!r} is not served by a detector")
        self.detector = detector
        self.spec = spec
        self.max_side = spec.effective_max_side()
        self.model_version = spec.model_version()
        self.timings = Timings()
        self.params = {**info.defaults(), **spec.params}

    def run(self, images: Sequence[LoadedImage], batch_size: int = 8) -> list[list[Region]]:
        """Regions for each image (one forward pass per image)."""
        from zerolabel.cad.inference import detect, rescaled_confidence

        threshold = float(self.params["score_threshold"])
        results = []
        for image in images:
            start = time.perf_counter()
            found = detect(self.detector, image, **self.params)
            regions = [
                Region(
                    box,
                    rescaled_confidence(float(score), threshold),
                    self.spec.method,
                    geometry.rle_encode(mask) if mask is not None and self.spec.masks else None,
                )
                for box, score, mask in found
            ]
            self.timings.forward_s += time.perf_counter() - start
            results.append(regions)
        self.timings.images += len(images)
        return results


class _Kept(Generic[_Key, _Model]):
    """The models loaded last, at most ``size``; the least recently used is dropped first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"ZEROLABEL_WORKER_MODELS must be at least 1, got {size}")
        self.size = size
        self._models: OrderedDict[_Key, _Model] = OrderedDict()

    def get(self, key: _Key, load: Callable[[], _Model]) -> _Model:
        """The model kept under ``key``, else ``load()``'s, kept from now on."""
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load()
        self._models[key] = model
        while len(self._models) > self.size:
            dropped, _ = self._models.popitem(last=False)
            logger.info("dropped %s from memory (ZEROLABEL_WORKER_MODELS=%d)", dropped, self.size)
        return model

    def keys(self) -> list[_Key]:
        """The keys kept, least recently used first."""
        return list(self._models)


class ModelStore:
    """The models one process serves, each loaded on first use and then kept.

    Feature methods share one backbone per (backbone, position rule). Detectors and fitted files
    are found by the file name a spec gives: the defaults ``ZEROLABEL_CAD_CHECKPOINT`` and
    ``ZEROLABEL_FITTED`` by their base name, any other in ``ZEROLABEL_MODELS_DIR``
    (:mod:`zerolabel.model_files`), so one worker serves projects of different detectors at
    once. The last ``ZEROLABEL_WORKER_MODELS`` detectors (and as many fitted files) stay loaded.
    Backbone weights ``zerolabel adapt`` wrote are found the same way when a spec names them
    (``adapted-<digest>.pth``) and kept likewise. A spec asking for other weights than these
    settings serve is refused, so a result is never labelled with weights that did not make it.
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._backbones: dict[tuple[str, str], Backbone] = {}
        self.detectors: _Kept[str, torch.nn.Module] = _Kept(settings.worker_models)
        self.fitted_files: _Kept[tuple[str, str, str, str], Fitted] = _Kept(settings.worker_models)
        self.checkpoints: _Kept[tuple[str, str, str], Backbone] = _Kept(settings.worker_models)

    def runner(self, spec: DiscoverySpec) -> Runner:
        """The runner for ``spec``, as its method's kind needs.

        Raises:
            WeightsError: the spec names weights these settings do not serve, or they fail.
            ConfigError: the settings cannot serve the spec's method (no detector file), or the
                file the spec names is not in the models folder (the message lists it).
        """
        if methods.get(spec.method).kind is MethodKind.DETECTOR:
            return DetectorRunner(self.detector(spec), spec)
        return Discoverer(self.backbone(spec), spec, self.fitted(spec))

    def backbone(self, spec: DiscoverySpec) -> Backbone:
        """The loaded ViT backbone of a feature-method spec."""
        served = self.settings.weights if spec.backbone == self.settings.backbone else "hub"
        if spec.weights != served and model_files.CHECKPOINT_NAME.fullmatch(spec.weights):
            return self.adapted(spec)
        key = (spec.backbone, spec.pos_embed)
        if key not in self._backbones:
            own = spec.backbone == self.settings.backbone
            served = self.settings.weights if own else "hub"
            if spec.weights != served:
                raise WeightsError(
                    f"the request asks for {spec.backbone} with weights {spec.weights!r} but "
                    f"this worker has {served!r}: give backend and workers the same "
                    "ZEROLABEL_BACKBONE, ZEROLABEL_CHECKPOINT and ZEROLABEL_WEIGHTS_TAG"
                )
            self._backbones[key] = settings_backbone(self.settings, spec.backbone, spec.pos_embed)
        return self._backbones[key]

    def adapted(self, spec: DiscoverySpec) -> Backbone:
        """The backbone with the adapted weights a spec names, from the models folder.

        Raises:
            WeightsError: no models folder, the file is not the one its name names, or its
                weights do not fit the spec's backbone.
            ConfigError: the file is not in the models folder (the message lists those it is).
        """
        folder = self.settings.models_dir
        if folder is None:
            raise WeightsError(
                f"the request asks for checkpoint {spec.weights!r} but this worker has no "
                "ZEROLABEL_MODELS_DIR: give backend and workers the same one, holding it"
            )
        path = model_files.locate(folder, spec.weights, "checkpoint")
        own = spec.backbone == self.settings.backbone

        def load() -> Backbone:
            model_files.check_checkpoint_bytes(path)
            kwargs = self.settings.backbone_kwargs if own else {}
            chosen = dataclasses.replace(
                self.settings, backbone=spec.backbone, checkpoint=str(path), backbone_kwargs=kwargs
            )
            logger.info("loading %s with checkpoint %s", spec.backbone, path.name)
            return settings_backbone(chosen, spec.backbone, spec.pos_embed)

        return self.checkpoints.get((str(path), spec.backbone, spec.pos_embed), load)

    def fitted(self, spec: DiscoverySpec) -> Fitted | None:
        """The loaded fitted file a spec names (None when it names none).

        Raises:
            WeightsError: the spec names another file than ``ZEROLABEL_FITTED`` and there is no
                models folder, or the file does not fit the spec's method and backbone.
            ConfigError: the name is not a fitted file's, or not in the models folder.
        """
        if spec.fitted is None:
            return None
        kind = methods.get(spec.method).fitted or ""
        path, named = self._fitted_path(spec.fitted, kind)
        key = (str(path), kind, spec.backbone, spec.weights)

        def load() -> Fitted:
            fitted = load_fitted(path, kind=kind, backbone=spec.backbone, weights=spec.weights)
            if named and fitted.file_name() != path.name:
                raise WeightsError(
                    f"fitted file {path.name} in {path.parent} holds the fit "
                    f"{fitted.file_name()}: it was renamed; install it again with zerolabel use"
                )
            return fitted

        return self.fitted_files.get(key, load)

    def _fitted_path(self, name: str, kind: str) -> tuple[Path, bool]:
        """Where the fitted file ``name`` is, and whether it is a models-folder file."""
        default = self.settings.fitted
        if default is not None and os.path.basename(default) == name:
            return Path(default), False
        folder = self.settings.models_dir
        if folder is None:
            raise WeightsError(
                f"the request asks for fitted file {name!r} but this worker has "
                f"{os.path.basename(default) if default else None!r}: give backend and workers "
                "the same ZEROLABEL_FITTED, or the same ZEROLABEL_MODELS_DIR holding it"
            )
        name = model_files.check_fitted_name(name, kind)
        return model_files.locate(folder, name, "fitted file"), True

    def detector(self, spec: DiscoverySpec) -> torch.nn.Module:
        """The loaded detector of a detector spec (torchvision is imported only here).

        Raises:
            ConfigError: no detector at all (neither ``ZEROLABEL_CAD_CHECKPOINT`` nor
                ``ZEROLABEL_MODELS_DIR``), or the name is not in the models folder.
            WeightsError: another detector than this worker's and no models folder, or the
                file is not a detector (or not the one its name names).
        """
        path, named = self._detector_path(spec)

        def load() -> torch.nn.Module:
            if named:
                model_files.check_detector_bytes(path)
            return self.load_detector(path)

        return self.detectors.get(str(path), load)

    def _detector_path(self, spec: DiscoverySpec) -> tuple[Path, bool]:
        """Where the detector a spec names is, and whether it is a models-folder file."""
        default = self.settings.cad_checkpoint
        if default is not None and os.path.basename(default) == spec.weights:
            return Path(default), False
        folder = self.settings.models_dir
        if folder is not None:
            name = model_files.check_detector_name(spec.weights)
            return model_files.locate(folder, name, "detector"), True
        if default is None:
            raise ConfigError(
                f"method {spec.method!r} needs ZEROLABEL_CAD_CHECKPOINT, or ZEROLABEL_MODELS_DIR "
                f"holding the detector {spec.weights!r} the request names"
            )
        raise WeightsError(
            f"the request asks for detector {spec.weights!r} but this worker serves "
            f"{os.path.basename(default)!r}: give backend and workers the same "
            "ZEROLABEL_CAD_CHECKPOINT, or the same ZEROLABEL_MODELS_DIR holding it"
        )

    def load_detector(self, path: Path) -> torch.nn.Module:
        """Read a detector file onto this worker's device (tests replace it)."""
        from zerolabel.cad.model import load_detector

        logger.info("loading detector %s", path)
        detector, _ = load_detector(path, pick_device(self.settings.device))
        return detector


def settings_backbone(
    settings: WorkerSettings, name: str | None = None, pos_embed: str | None = None
) -> Backbone:
    """Load the ViT ``name`` (default ``ZEROLABEL_BACKBONE``) as these settings serve it: with
    ``ZEROLABEL_CHECKPOINT`` and ``ZEROLABEL_BACKBONE_KWARGS`` when it is the settings' own
    backbone, the hub weights of another named one; device, precision and compilation from the
    settings."""
    name = name or settings.backbone
    own = name == settings.backbone
    return load_backbone(
        name,
        checkpoint=settings.checkpoint if own else None,
        device=settings.device,
        half=settings.half,
        pos_embed=pos_embed or settings.pos_embed,
        model_kwargs=settings.backbone_kwargs if own else None,
        offline=settings.offline,
        precision=settings.precision,
        compile_mode=settings.compile_mode,
    )
