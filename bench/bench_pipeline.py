"""Pipeline benchmark: ms/image split into load, forward and method (and refine, where the
pipeline times it) for every registered feature method; fused vs explicit attention; peak
memory of ``zerolabel predict`` on a 12-megapixel photo.

Weights are seeded random (speed and memory do not depend on their values). A method that
needs a fitted file gets the one ``--fitted`` names (fitted on ``dino_vits16`` with hub weights,
what the spec here names); without it, an RPS direction is fitted on the bench images first.
Prints markdown tables. Usage::

    python bench/bench_pipeline.py                 # everything, CPU (a few minutes on 2 cores)
    python bench/bench_pipeline.py --only methods --device cuda --sizes 480 --batches 1 32 64
    python bench/bench_pipeline.py --only methods --sizes 224 --batches 1 --images 2  # smoke
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError, DiscoveryError
from zerolabel.fitted import Fitted, load_fitted, save_fitted
from zerolabel.io.images import ImageLimits, load_file
from zerolabel.pipeline import Discoverer
from zerolabel.vit import features
from zerolabel.vit.backbone import load_backbone, set_fused_attention

ROOT = Path(__file__).resolve().parents[1]


EXAMPLES = sorted((ROOT / "examples" / "voc2007" / "JPEGImages").glob("*.jpg"))


def _images_at(side: int, count: int, folder: Path) -> list[Path]:
    """Example photos resized so the longer side is ``side``, saved as JPEG."""
    paths = []
    for i in range(count):
        source = Image.open(EXAMPLES[i % len(EXAMPLES)]).convert("RGB")
        scale = side / max(source.size)
        resized = source.resize((round(source.width * scale), round(source.height * scale)))
        path = folder / f"{side}_{i}.jpg"
        resized.save(path, quality=90)
        paths.append(path)
    return paths


COLUMNS = ("load", "preprocess", "forward", "method", "refine")
"""Stages timed per image; ``refine`` shows "-" while the pipeline does not time one."""


def bench_methods(
    device: str, sizes: list[int], batches: list[int], n_images: int, fitted: str | None
) -> None:
    torch.manual_seed(0)
    backbone = load_backbone("dino_vits16", device=device, random_weights=True)
    print(f"\n### ms per image, ViT-S/16 ({backbone.device}), {n_images} images per cell\n")
    print(f"| method | side px | batch | {' | '.join(COLUMNS)} | total | img/s |")
    print("|---|---|---|" + "---|" * len(COLUMNS) + "---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for side in sizes:
            # All images share one size so batches are full (square crops of the examples).
            paths = _images_at(side, n_images, Path(tmp))
            own = None if fitted else _fit_rps(backbone, paths, side, Path(tmp))
            for method in methods.FEATURE_METHODS:
                try:
                    rps_only = own if methods.get(method).fitted == "rps" else None
                    config, loaded = _spec(method, side, fitted or rps_only)
                except DiscoveryError as exc:  # no fitted file, or one that does not fit
                    print(f"| {method} | {side} | - | {exc} |")
                    continue
                for batch in batches:
                    _bench_cell(backbone, config, loaded, paths, batch, side)


def _fit_rps(backbone, paths: list[Path], side: int, folder: Path) -> str:
    """An RPS direction fitted on the bench images themselves (what ``rps-fit`` computes)."""
    from zerolabel.loop.fit_rps import fit_rps
    from zerolabel.loop.fitting import FitSample

    samples = [
        FitSample(p.name, lambda p=p: load_file(p, ImageLimits(), max_side=side)) for p in paths
    ]
    fit, _ = fit_rps(samples, backbone, backbone_name="dino_vits16", weights="hub", max_side=side)
    return str(save_fitted(fit, folder))


def _spec(method: str, side: int, fitted: str | None) -> tuple[DiscoverySpec, Fitted | None]:
    """The spec of one row and its loaded fitted file (None for methods without one).

    Raises:
        ConfigError: the method needs a fitted file and none was given.
        WeightsError: the file given does not fit the method or the backbone.
    """
    info = methods.get(method)
    path = fitted if info.fitted is not None else None
    if path is None and info.fitted_required:
        raise ConfigError(f"needs a fitted {info.fitted} file: give --fitted")
    spec = DiscoverySpec(
        method=method,
        max_side=side,
        square=side,
        fitted=Path(path).name if path else None,
    )
    if path is None or info.fitted is None:
        return spec, None
    return spec, load_fitted(path, kind=info.fitted, backbone=spec.backbone, weights=spec.weights)


def _bench_cell(backbone, config, fitted, paths, batch, side) -> None:
    discoverer = Discoverer(backbone, config, fitted)
    limits = ImageLimits()
    discoverer.run([load_file(paths[0], limits, max_side=side)], batch_size=1)  # warm-up
    discoverer.timings = type(discoverer.timings)()
    start = time.perf_counter()
    images = [load_file(p, limits, max_side=side) for p in paths]
    load_s = time.perf_counter() - start
    discoverer.run(images, batch_size=batch)
    t = discoverer.timings
    n = len(paths)
    refine = getattr(t, "refine_s", None)
    cells = [load_s, t.preprocess_s, t.forward_s, t.method_s]
    total = sum(cells) + (refine or 0.0)
    ms = " | ".join(f"{1000 * c / n:.1f}" for c in cells)
    ms += " | -" if refine is None else f" | {1000 * refine / n:.1f}"
    print(
        f"| {config.method} | {side} | {batch} | {ms} | {1000 * total / n:.1f} | {n / total:.1f} |"
    )


def bench_attention(device: str, sizes: list[int], repeats: int) -> None:
    torch.manual_seed(0)
    backbone = load_backbone("dino_vits16", device=device, random_weights=True)
    print(
        f"\n### Forward pass, ViT-S/16 (depth 12, {backbone.device}): fused SDPA vs explicit "
        "softmax(q kᵀ) v, same weights\n"
    )
    print("| side px | tokens | explicit ms | fused ms | speed-up | keys rel. error |")
    print("|---|---|---|---|---|---|")
    for side in sizes:
        images = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
        times, keys = {}, {}
        for fused in (False, True):
            set_fused_attention(backbone.model, fused)
            features.extract(backbone, images)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                keys[fused] = features.extract(backbone, images)[0].k
            times[fused] = (time.perf_counter() - start) / repeats
        error = float((keys[True] - keys[False]).norm() / keys[False].norm())
        tokens = (side // 16) ** 2
        print(
            f"| {side} | {tokens} | {1000 * times[False]:.0f} | {1000 * times[True]:.0f} | "
            f"{times[False] / times[True]:.2f}x | {error:.1e} |"
        )
    set_fused_attention(backbone.model, True)


def bench_memory(names: list[str]) -> None:
    print(
        "\n### Peak memory of `zerolabel predict` on one 12-megapixel photo (4000x3000 JPEG), "
        "default settings, CPU\n"
    )
    print("| method | peak RSS MiB | wall s |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "photo12mp.jpg"
        rng = np.random.default_rng(0)
        base = np.asarray(Image.open(EXAMPLES[0]).convert("RGB").resize((4000, 3000)))
        noisy = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(photo, quality=92)
        checkpoint = Path(tmp) / "random_vits16.pth"
        torch.manual_seed(0)
        model = load_backbone("dino_vits16", device="cpu", random_weights=True).model
        torch.save(model.state_dict(), checkpoint)
        for method in names:
            if _needs_fitted(method):  # fitted files match real weights, not random ones
                print(f"| {method} | needs a fitted file | - |")
                continue
            _memory_run(method, photo, checkpoint, Path(tmp) / method)


def _needs_fitted(method: str) -> bool:
    return methods.get(method).fitted_required


def _memory_run(method: str, photo: Path, checkpoint: Path, out: Path) -> None:
    # VmHWM is this process's own peak; getrusage's ru_maxrss would carry over the parent's
    # peak across fork + exec.
    script = (
        "import re, sys; from zerolabel.cli.main import main\n"
        "try:\n    main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n    status = open('/proc/self/status').read()\n"
        "    print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
    )
    cmd = [
        sys.executable,
        "-c",
        script,
        "predict",
        str(photo),
        "-m",
        method,
        "-c",
        str(checkpoint),
        "-o",
        str(out),
        "--device",
        "cpu",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    print(f"| {method} | {peak_kib / 1024:.0f} | {time.perf_counter() - start:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["methods", "attention", "memory"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 480, 800])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=8, help="images per cell")
    parser.add_argument("--attention-sizes", type=int, nargs="+", default=[480, 800, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--fitted", default=None, help="fitted file for the methods that use one (dino_vits16)"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.only in (None, "methods"):
        bench_methods(args.device, args.sizes, args.batches, args.images, args.fitted)
    if args.only in (None, "attention"):
        bench_attention(args.device, args.attention_sizes, args.repeats)
    if args.only in (None, "memory"):
        bench_memory(list(methods.FEATURE_METHODS))


if __name__ == "__main__":
    main()
