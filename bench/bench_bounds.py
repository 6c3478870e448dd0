"""Worst-case job time and worker memory at the bounds a project may ask for.

A project's input gives its backbone at most ``PROJECT_MAX_PATCHES`` patches and every method
parameter has a maximum (``zerolabel.methods``). Each row runs, in a fresh process, one job at
those bounds: a square photo of the largest side the backbone allows, the method's parameters
at their most expensive allowed values (LOST with every patch a seed, MaskCut cutting the most
objects with no early stop, ProMerge seeding every 4th patch and keeping the most objects),
masks refined when the method refines by default. It prints the job's time (preprocess,
forward pass, method, refinement; not process start-up or model build) and the process's peak
resident memory, model included.

Weights are seeded random (time and memory do not depend on their values). Methods that need a
fitted file are left out (their cost is one product with the features). Usage::

    python bench/bench_bounds.py                                  # every backbone and method
    python bench/bench_bounds.py --backbones dino_vits16 --methods maskcut lost   # a few rows
    python bench/bench_bounds.py --backbones dino_vits16 --side 2048   # beyond the bound
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BACKBONES = ("dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8")
WORST_PARAMS: dict[str, dict[str, object]] = {
    "lost": {"k_patches": "max"},
    "maskcut": {"max_objects": "max", "min_area_frac": 1.0},
    "promerge": {"stride": "min", "max_objects": "max"},
    "dinoseg": {"head": "last"},
}
"""The allowed values that cost the most ("max"/"min": the registry's bound)."""

_ROW = r"""
import json, re, sys, time
import numpy as np, torch
from PIL import Image
from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.io.images import ImageLimits, load_file
from zerolabel.pipeline import Discoverer
from zerolabel.vit.backbone import load_backbone

backbone_name, method, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
worst = json.loads(sys.argv[4])
torch.manual_seed(0)
backbone = load_backbone(backbone_name, device="cpu", random_weights=True)
params = {}
for param in methods.get(method).params:
    want = worst.get(param.name)
    if want == "max":
        params[param.name] = int(param.maximum) if param.type == "int" else param.maximum
    elif want == "min":
        params[param.name] = int(param.minimum) if param.type == "int" else param.minimum
    elif want == "last":
        params[param.name] = backbone.model.blocks[-1].attn.num_heads - 1
    elif want is not None:
        params[param.name] = want
spec = DiscoverySpec(
    method=method, backbone=backbone_name, max_side=side, square=side, params=params
)
rng = np.random.default_rng(0)
pixels = (rng.random((side // 32, side // 32, 3)) * 255).astype(np.uint8)  # blocks: objects
Image.fromarray(pixels).resize((side, side), Image.NEAREST).save(sys.argv[5])
image = load_file(sys.argv[5], ImageLimits(), max_side=side)
discoverer = Discoverer(backbone, spec)
start = time.perf_counter()
results = discoverer.run([image], batch_size=1)
job_s = time.perf_counter() - start
peak = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"job_s": job_s, "peak_mib": peak / 1024, "params": params}))
"""


def _row(backbone: str, method: str, side: int) -> dict[str, object]:
    worst = json.dumps(WORST_PARAMS.get(method, {}))
    with tempfile.TemporaryDirectory() as folder:
        photo = str(Path(folder) / "photo.png")
        done = subprocess.run(
            [sys.executable, "-c", _ROW, backbone, method, str(side), worst, photo],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    row: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def main() -> None:
    from zerolabel import methods
    from zerolabel.labelstudio.options import PROJECT_MAX_PATCHES, project_side_limit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument(
        "--side",
        type=int,
        default=None,
        help="another side than the bound (e.g. 2048: the "
        "input a project may no longer ask for), to see what the bound saves",
    )
    args = parser.parse_args()
    names = args.methods or [
        name for name in methods.FEATURE_METHODS if not methods.get(name).fitted_required
    ]
    print(
        f"\n### Worst allowed job, CPU ({PROJECT_MAX_PATCHES} patches, parameters at their "
        "bounds): `python bench/bench_bounds.py`\n"
    )
    print("| backbone | side px | method | parameters at their bound | job s | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for backbone in args.backbones:
        side = args.side or project_side_limit(backbone)
        for method in names:
            row = _row(backbone, method, side)
            if "error" in row:
                print(f"| {backbone} | {side} | {method} | {row['error']} | - | - |")
                continue
            params = ", ".join(f"{k}={v}" for k, v in dict(row["params"]).items()) or "defaults"
            print(
                f"| {backbone} | {side} | {method} | {params} | {float(row['job_s']):.1f} | "
                f"{float(row['peak_mib']):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
