"""Batch pre-labeling of local files: the engine behind ``zerolabel predict``.

One bad file never sinks the batch: it is logged with its cause, counted, and skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerolabel import methods
from zerolabel.contract import DiscoveryResult, DiscoverySpec, Region
from zerolabel.errors import ConfigError, ImageLoadError
from zerolabel.formats.coco import coco_from_results
from zerolabel.io.images import ImageLimits, LoadedImage, load_file
from zerolabel.labelstudio.tasks import Target, task
from zerolabel.pipeline import ModelStore, Runner, settings_backbone
from zerolabel.progress import Progress, stage
from zerolabel.settings import WorkerSettings
from zerolabel.sites import LOCAL_FILES_PATH
from zerolabel.vit.backbone import Backbone, pick_device

logger = logging.getLogger(__name__)


def with_overrides(settings: WorkerSettings, overrides: dict[str, Any]) -> WorkerSettings:
    """Settings with the given (non-None) fields replaced, validated again."""
    changed = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    changed.validate()
    return changed


@dataclass
class PredictReport:
    """What a `zerolabel predict` run did: its results, the files it could not read, its outputs."""

    results: list[DiscoveryResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    outputs: list[Path] = field(default_factory=list)

    def summary(self, elapsed_s: float) -> str:
        n_ok = len(self.results)
        n_regions = sum(len(r.regions) for r in self.results)
        per_image = 1000 * elapsed_s / max(1, n_ok + len(self.failures))
        lines = [
            f"{n_ok} image(s) pre-labeled, {n_regions} region(s), {len(self.failures)} failed "
            f"in {elapsed_s:.1f} s ({per_image:.0f} ms/image)"
        ]
        lines += [f"  FAILED {name}: {reason}" for name, reason in self.failures]
        lines += [f"  wrote {path}" for path in self.outputs]
        return "\n".join(lines)


@dataclass
class BatchJob:
    """A runner (a loaded model and a spec) applied to files in batches."""

    runner: Runner
    settings: WorkerSettings

    @classmethod
    def create(
        cls,
        settings: WorkerSettings,
        *,
        square: int | None = None,
        params: dict[str, Any] | None = None,
        masks: bool = True,
        refine: bool | None = None,
        shapes: str = "both",
        preset: str = "default",
    ) -> BatchJob:
        """Check the spec the settings describe, then load its model.

        ``shapes`` is the form tasks.json sends objects in (:attr:`Target.shapes`); ``preset``
        the input setting (:data:`zerolabel.methods.PRESETS`).

        Raises:
            ConfigError: the spec cannot be built (unknown parameter...): nothing is loaded.
            WeightsError: the model's weights are missing or do not fit.
        """
        spec = settings.spec(
            square=square,
            params=params or {},
            masks=masks,
            refine=refine,
            shapes=shapes,
            preset=preset,
        )
        return cls(load_runner(ModelStore(settings), settings, spec), settings)

    def discover(self, files: Sequence[Path]) -> Iterator[tuple[Path, DiscoveryResult | str]]:
        """Yield (file, result) or (file, failure reason) in input order, batch by batch."""
        limits = ImageLimits(self.settings.max_image_bytes, self.settings.max_image_pixels)
        side = self.runner.max_side
        size = self.settings.batch_size
        for start in range(0, len(files), size):
            chunk = files[start : start + size]
            loaded: list[tuple[Path, LoadedImage]] = []
            failed: dict[Path, str] = {}
            for path in chunk:
                try:
                    loaded.append((path, load_file(path, limits, max_side=side)))
                except ImageLoadError as exc:
                    failed[path] = exc.reason
            done = self._run_chunk(loaded, failed)
            for path in chunk:
                if path in failed:
                    yield path, failed[path]
                    continue
                image, regs = done[path]
                yield (
                    path,
                    DiscoveryResult(str(path), image.original_hw, regs, self.runner.model_version),
                )

    def _run_chunk(
        self, loaded: list[tuple[Path, LoadedImage]], failed: dict[Path, str]
    ) -> dict[Path, tuple[LoadedImage, list[Region]]]:
        """Regions per loaded file; when the batched run fails (out of memory, an odd image),
        each image runs alone so only the culprit is reported in ``failed``."""
        images = [image for _, image in loaded]
        try:
            regions = self.runner.run(images, batch_size=self.settings.batch_size)
            return {
                path: (image, regs) for (path, image), regs in zip(loaded, regions, strict=True)
            }
        except (RuntimeError, ValueError) as exc:
            logger.warning(
                "batch of %d failed (%s); running its images one by one", len(images), exc
            )
        done: dict[Path, tuple[LoadedImage, list[Region]]] = {}
        for path, image in loaded:
            try:
                done[path] = (image, self.runner.run([image], batch_size=1)[0])
            except (RuntimeError, ValueError) as exc:
                failed[path] = f"discovery failed: {exc}"
        return done

    def run(
        self,
        files: Sequence[Path],
        out_dir: Path,
        *,
        label: str = "object",
        url_prefix: str = f"{LOCAL_FILES_PATH}?d=",
        document_root: Path = Path("."),
    ) -> PredictReport:
        """Pre-label ``files``; write ``tasks.json`` (Label Studio import) and ``coco.json``."""
        report = PredictReport()
        names: list[str] = []
        with Progress("pre-labeling", len(files), unit="image") as progress:
            for path, outcome in self.discover(files):
                progress.advance(1)
                if isinstance(outcome, str):
                    logger.error("skipped %s: %s", path, outcome)
                    report.failures.append((str(path), outcome))
                else:
                    report.results.append(outcome)
                    names.append(str(path))
        out_dir.mkdir(parents=True, exist_ok=True)
        target = Target(label=label, shapes=self.runner.spec.shapes)
        tasks = [
            task(result, target, image_url(Path(name), url_prefix, document_root))
            for result, name in zip(report.results, names, strict=True)
        ]
        coco = coco_from_results(
            report.results, [_coco_name(n, document_root) for n in names], label
        )
        report.outputs = [
            _write(out_dir / "tasks.json", tasks),
            _write(out_dir / "coco.json", coco),
        ]
        return report


def load_runner(store: ModelStore, settings: WorkerSettings, spec: DiscoverySpec) -> Runner:
    """``store.runner(spec)``, logged: what loads, on which device, and how long it took
    (a ViT loads in seconds, more when its weights are downloaded)."""
    detector = methods.get(spec.method).kind is methods.MethodKind.DETECTOR
    model = f"detector {spec.weights}" if detector else f"model {spec.backbone}"
    with stage(f"loading {spec.method} ({model} on {device_name(settings.device)})", done="ready"):
        return store.runner(spec)


def loaded_backbone(settings: WorkerSettings) -> Backbone:
    """The ViT the settings name, loaded with a log line before and after (with the time)."""
    loading = f"loading model {settings.backbone} on {device_name(settings.device)}"
    with stage(loading, done="loaded"):
        return settings_backbone(settings)


def device_name(device: str) -> str:
    """The device ``auto`` resolves to here (the name as given when it cannot be used)."""
    try:
        return str(pick_device(device))
    except (ConfigError, RuntimeError):
        return device


def image_url(path: Path, url_prefix: str, document_root: Path) -> str:
    """URL Label Studio uses for a file: the prefix plus its path below the document root."""
    return url_prefix + _coco_name(str(path), document_root)


def _coco_name(name: str, document_root: Path) -> str:
    absolute = Path(name).resolve()
    try:
        return absolute.relative_to(document_root.resolve()).as_posix()
    except ValueError:
        return absolute.as_posix()


def _write(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return path
