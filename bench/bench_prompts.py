"""Prompt methods and click-time refinement: milliseconds per call at a 480 x 640 input.

The prompt functions of ``zerolabel.discovery.prompts`` run on synthetic keys of a 30 x 40
patch grid (ViT-S/16 at 480 x 640: 384-dimensional keys; a background direction, two planted
rectangular objects, Gaussian noise; seeded); the refinements on an example photo resized to
640 x 480 with an elliptic patch mask in its middle. Prints a markdown table: median and
fastest milliseconds per call, and the object's size. Usage::

    python bench/bench_prompts.py                 # about a minute on 2 cores (the CRF dominates)
    python bench/bench_prompts.py --repeats 50 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerolabel import refine  # noqa: E402
from zerolabel.discovery.prompts import (  # noqa: E402
    object_from_points,
    object_from_prompt,
    object_in_box,
)
from zerolabel.geometry import Frame  # noqa: E402

GRID = (30, 40)
PATCH = 16
OBJECTS = ((slice(8, 20), slice(6, 20)), (slice(14, 26), slice(24, 36)))  # rows, cols


def synthetic_keys(dim: int, noise: float, seed: int) -> torch.Tensor:
    """[1200, dim] keys: background along e0, each planted block along its own direction."""
    generator = torch.Generator().manual_seed(seed)
    signal = torch.zeros(*GRID, dim)
    signal[..., 0] = 1.0
    for k, (rows, cols) in enumerate(OBJECTS, start=1):
        signal[rows, cols] = 0.0
        signal[rows, cols, k] = 1.0
        signal[rows, cols, 0] = -0.3
    noisy = signal + noise * torch.randn(signal.shape, generator=generator)
    return noisy.reshape(GRID[0] * GRID[1], dim)


def example_photo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The photo at ``path`` resized to 640 x 480 (uint8 RGB) and an elliptic [30, 40] patch
    mask in its middle."""
    from PIL import Image

    with Image.open(path) as image:
        size = (GRID[1] * PATCH, GRID[0] * PATCH)
        pixels = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BICUBIC))
    rows, cols = np.mgrid[: GRID[0], : GRID[1]] + 0.5
    cells = ((rows - GRID[0] / 2) / 10) ** 2 + ((cols - GRID[1] / 2) / 13) ** 2 < 1.0
    return pixels, cells


def timed(repeats: int, call: Callable[[], object]) -> tuple[object, float, float]:
    """``call``'s result, and the median and fastest of ``repeats`` wall times in ms."""
    call()  # the first call pays for thread pools and lazy imports
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - start) * 1e3)
    return result, statistics.median(times), min(times)


def size(result: object) -> str:
    """The found object's size: patches of a patch mask, pixels of a pixel mask."""
    if result is None:
        return "nothing"
    if isinstance(result, np.ndarray):
        return f"{int(result.sum())} px"
    mask = getattr(result, "mask", None)
    return f"{int(mask.sum())} patches" if mask is not None else "?"


def rows(args: argparse.Namespace) -> list[tuple[str, str, float, float, str]]:
    """(function, prompt, median ms, fastest ms, found) of every timed call."""
    keys = synthetic_keys(args.dim, args.noise, args.seed)
    pixels, cells = example_photo(args.photo)
    frame = Frame(pixels.shape[:2], pixels.shape[:2], PATCH)
    calls: list[tuple[str, str, Callable[[], object], int]] = [
        (
            "`object_from_points`",
            "1 positive click",
            lambda: object_from_points(keys, GRID, [(12, 10)]),
            args.repeats,
        ),
        (
            "`object_from_points`",
            "3 positive, 2 negative clicks",
            lambda: object_from_points(keys, GRID, [(12, 10), (20, 30), (9, 7)], [(2, 2), (28, 3)]),
            args.repeats,
        ),
        (
            "`object_in_box`",
            "rectangle around an object (16 x 18 patches)",
            lambda: object_in_box(keys, GRID, (6, 4, 22, 22)),
            args.repeats,
        ),
        (
            "`object_in_box`",
            "rectangle over the whole grid (1200 patches)",
            lambda: object_in_box(keys, GRID, (0, 0, *GRID)),
            args.repeats,
        ),
        (
            "`object_from_prompt`",
            "rectangle, 1 positive and 1 negative click",
            lambda: object_from_prompt(keys, GRID, [(20, 30)], [(2, 2)], (6, 4, 22, 22)),
            args.repeats,
        ),
        (
            "`refine.guided_patch_mask`",
            "guided filter, 480 x 640 photo",
            lambda: refine.guided_patch_mask(pixels, cells, frame),
            args.repeats,
        ),
        (
            "`refine.refine_patch_mask`",
            "dense CRF (MaskCut's), 480 x 640 photo",
            lambda: refine.refine_patch_mask(pixels, cells, frame),
            args.crf_repeats,
        ),
    ]
    found = []
    for function, prompt, call, repeats in calls:
        result, median, fastest = timed(repeats, call)
        found.append((function, prompt, median, fastest, size(result)))
    return found


def markdown(found: list[tuple[str, str, float, float, str]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| function | prompt | median ms | fastest ms | found |",
        "|---|---|---:|---:|---|",
    ]
    for function, prompt, median, fastest, result in found:
        lines.append(f"| {function} | {prompt} | {median:.1f} | {fastest:.1f} | {result} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per row")
    parser.add_argument("--crf-repeats", type=int, default=5, help="timed calls of the CRF")
    parser.add_argument("--dim", type=int, default=384, help="key dimension (ViT-S: 384)")
    parser.add_argument("--noise", type=float, default=0.05, help="per-coordinate noise std")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--photo",
        type=Path,
        default=ROOT / "examples" / "coco8" / "images" / "000000000036.jpg",
        help="photo the refinements run on",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.crf_repeats < 1:
        parser.error("--repeats and --crf-repeats must be at least 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    found = rows(args)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; keys {GRID[0]}x{GRID[1]}"
        f" x {args.dim}, noise {args.noise}; photo {args.photo.name}; median and fastest of "
        f"{args.repeats} calls ({args.crf_repeats} for the CRF)\n"
    )
    print(markdown(found))


if __name__ == "__main__":
    main()
