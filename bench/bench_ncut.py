"""Normalized-cut eigenvector: the fast Lanczos solver vs the dense generalized ``eigh``.

Both solve ``(D - W) v = lambda D v`` on the same TokenCut graphs, built from synthetic keys
(a background direction, a few planted rectangular objects, Gaussian noise; seeded). Prints a
markdown table: milliseconds per solve, speed-up, and whether the two solutions give the same
TokenCut and MaskCut bipartitions. Usage::

    python bench/bench_ncut.py    # 20x20 30x40 48x64 60x60: under a minute on 2 cores
    python bench/bench_ncut.py --grids 60x60 --noise 0.1 --objects 3 --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerolabel.discovery.graph import (  # noqa: E402
    bipartition,
    dense_second_smallest_eigenvector,
    ncut_graph,
    second_smallest_eigenvector,
)
from zerolabel.discovery.maskcut import oriented_foreground  # noqa: E402

DEFAULT_GRIDS = ["20x20", "30x40", "48x64", "60x60"]


def parse_grid(text: str) -> tuple[int, int]:
    """``"30x40"`` -> (30, 40): rows x columns of the patch grid."""
    try:
        h, w = (int(n) for n in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 30x40, got {text!r}") from None
    if h < 4 or w < 4:
        raise argparse.ArgumentTypeError(f"grid {text} is too small (at least 4x4)")
    return h, w


def synthetic_keys(
    grid_hw: tuple[int, int], objects: int, dim: int, noise: float, seed: int
) -> torch.Tensor:
    """[h * w, dim] keys: background along e0, each random block along its own direction.

    Args:
        grid_hw: (h, w) of the patch grid.
        objects: number of planted blocks (each up to half the grid on a side).
        dim: feature dimension.
        noise: standard deviation of the per-coordinate Gaussian noise.
        seed: seed of the generator.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = grid_hw
    signal = torch.zeros(h, w, dim)
    signal[..., 0] = 1.0
    for k in range(1, objects + 1):
        bh, bw = (int(torch.randint(2, n // 2 + 1, (1,), generator=gen)) for n in grid_hw)
        top = int(torch.randint(0, h - bh + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - bw + 1, (1,), generator=gen))
        signal[top : top + bh, left : left + bw] = 0.0
        signal[top : top + bh, left : left + bw, k] = 1.0
        signal[top : top + bh, left : left + bw, 0] = -0.3
    return (signal + noise * torch.randn(signal.shape, generator=gen)).reshape(h * w, dim)


def best_of(repeats: int, solve: Callable[[], Any]) -> tuple[Any, float]:
    """Result of ``solve`` and its fastest wall time over ``repeats`` runs, in milliseconds."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = solve()
        best = min(best, (time.perf_counter() - start) * 1e3)
    return result, best


def same_partitions(v: torch.Tensor, v_ref: torch.Tensor, grid_hw: tuple[int, int]) -> bool:
    """Whether both eigenvectors give the same TokenCut and MaskCut foregrounds and seeds."""
    fast, ref = bipartition(v), bipartition(v_ref)
    fast_mc, ref_mc = oriented_foreground(v, grid_hw), oriented_foreground(v_ref, grid_hw)
    return (
        fast[1] == ref[1]
        and torch.equal(fast[0], ref[0])
        and fast_mc[1] == ref_mc[1]
        and torch.equal(fast_mc[0], ref_mc[0])
    )


def bench_grid(grid_hw: tuple[int, int], args: argparse.Namespace) -> dict[str, Any]:
    """One table row: both solvers on the graph of one synthetic scene."""
    keys = synthetic_keys(grid_hw, args.objects, args.dim, args.noise, args.seed)
    w = ncut_graph(keys, tau=args.tau, eps=args.eps)
    (v, lam), fast_ms = best_of(args.repeats, lambda: second_smallest_eigenvector(w))
    dense_repeats = args.repeats if w.shape[0] <= args.dense_repeat_max_n else 1
    (v_ref, lam_ref), dense_ms = best_of(
        dense_repeats, lambda: dense_second_smallest_eigenvector(w)
    )
    return {
        "grid": f"{grid_hw[0]}x{grid_hw[1]}",
        "n": w.shape[0],
        "density": float((w == 1.0).double().mean()),
        "lambda": lam_ref,
        "lambda_err": abs(lam - lam_ref),
        "fast_ms": fast_ms,
        "dense_ms": dense_ms,
        "agree": same_partitions(v, v_ref, grid_hw),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| grid | N | W = 1 | lambda_2 | abs. lambda error | fast ms | dense ms | speed-up "
        "| same bipartition |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['grid']} | {r['n']} | {r['density']:.0%} | {r['lambda']:.3g} "
            f"| {r['lambda_err']:.1e} | {r['fast_ms']:.1f} | {r['dense_ms']:.0f} "
            f"| {r['dense_ms'] / r['fast_ms']:.0f}x | {'yes' if r['agree'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", type=parse_grid, default=DEFAULT_GRIDS)
    parser.add_argument("--objects", type=int, default=2, help="planted blocks per scene")
    parser.add_argument("--noise", type=float, default=0.05, help="per-coordinate noise std")
    parser.add_argument("--dim", type=int, default=384, help="key dimension (ViT-S: 384)")
    parser.add_argument("--tau", type=float, default=0.2, help="TokenCut threshold")
    parser.add_argument("--eps", type=float, default=1e-5, help="weight of the other edges")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument(
        "--dense-repeat-max-n", type=int, default=1500, help="time the dense solver once above N"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.grids = [g if isinstance(g, tuple) else parse_grid(g) for g in args.grids]
    warm_up = ncut_graph(synthetic_keys((8, 8), 1, args.dim, args.noise, args.seed), 0.2, 1e-5)
    second_smallest_eigenvector(warm_up)  # first calls pay for thread pools and imports
    dense_second_smallest_eigenvector(warm_up)
    rows = [bench_grid(grid_hw, args) for grid_hw in args.grids]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; keys: {args.objects} "
        f"objects, noise {args.noise}, dim {args.dim}; tau {args.tau}, eps {args.eps}\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
