"""Export benchmark: wall time and peak memory of ``zerolabel export`` on a large project.

Builds a synthetic Label Studio JSON export (only the JSON: export never opens the images) of
``--tasks`` annotated tasks of ``--width`` x ``--height`` images, each with ``--masks`` brush
masks (ellipses of random size and place), then runs the real ``zerolabel export`` in a
subprocess, so the peak resident memory measured (VmHWM) is the export's own, reading the
file included. Prints a markdown table. Usage::

    python bench/bench_export.py                       # 2 000 tasks of 12 megapixels, 3 masks
    python bench/bench_export.py --tasks 200 --formats coco yolo voc

Rows: reading the JSON alone (the floor every path pays), the library's
:func:`zerolabel.formats.export.export` on it, and the ``zerolabel export`` command, whose
peak also holds whatever the command line interface imports.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from zerolabel.contract import Rle
from zerolabel.geometry import rle_area, rle_from_runs
from zerolabel.labelstudio.brush import rle_to_brush_rle

ROOT = Path(__file__).resolve().parents[1]


def ellipse_rle(hw: tuple[int, int], rng: np.random.Generator) -> Rle:
    """An ellipse mask built column by column from its runs (no pixel array)."""
    h, w = hw
    ry, rx = rng.uniform(0.05, 0.25) * h, rng.uniform(0.05, 0.2) * w
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    cols = np.arange(int(cx - rx), int(np.ceil(cx + rx)), dtype=np.int64)
    half = ry * np.sqrt(np.clip(1.0 - ((cols + 0.5 - cx) / rx) ** 2, 0.0, None))
    top = np.clip(np.round(cy - half), 0, h).astype(np.int64)
    bottom = np.clip(np.round(cy + half), 0, h).astype(np.int64)
    keep = bottom > top
    cols, top, bottom = cols[keep], top[keep], bottom[keep]
    return rle_from_runs(cols * h + top, cols * h + bottom, hw)


def write_export(path: Path, n_tasks: int, n_masks: int, hw: tuple[int, int], seed: int) -> int:
    """Write the export JSON task by task; returns the total mask area in pixels.

    Brush streams come from each mask's runs (:func:`rle_to_brush_rle`), never from pixels.
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    area = 0
    with path.open("w") as out:
        out.write("[")
        for task_id in range(1, n_tasks + 1):
            result = []
            for k in range(n_masks):
                rle = ellipse_rle(hw, rng)
                area += rle_area(rle)
                value = {"format": "rle", "rle": rle_to_brush_rle(rle), "brushlabels": ["obj"]}
                result.append(
                    {
                        "id": f"t{task_id}m{k}",
                        "type": "brushlabels",
                        "from_name": "mask",
                        "to_name": "image",
                        "original_width": w,
                        "original_height": h,
                        "image_rotation": 0,
                        "value": value,
                    }
                )
            task = {
                "id": task_id,
                "data": {"image": f"/data/local-files/?d=photos/{task_id:05d}.jpg"},
                "annotations": [{"id": task_id, "result": result, "was_cancelled": False}],
                "predictions": [],
            }
            out.write(("," if task_id > 1 else "") + json.dumps(task, separators=(",", ":")))
        out.write("]")
    return area


_PEAK = (
    "import re, sys\n"
    "try:\n    {body}\n"
    "finally:\n    status = open('/proc/self/status').read()\n"
    "    print(re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
)


def run_measured(body: str, args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``body`` run in a fresh interpreter.

    VmHWM is the child's own peak; getrusage's ru_maxrss would carry the parent's peak over
    fork + exec.
    """
    cmd = [sys.executable, "-c", _PEAK.format(body=body), *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{done.stderr}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--masks", type=int, default=3, help="brush masks per task")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--formats", nargs="+", default=["coco", "yolo"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hw = (args.height, args.width)
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "export.json", Path(tmp) / "out"
        start = time.perf_counter()
        area = write_export(source, args.tasks, args.masks, hw, args.seed)
        made = time.perf_counter() - start
        n_masks = args.tasks * args.masks
        size_mib = source.stat().st_size / 2**20
        print(
            f"\n### `zerolabel export` of {args.tasks} tasks, {args.width}x{args.height} images, "
            f"{args.masks} brush masks each (JSON {size_mib:.0f} MiB, written in {made:.1f} s; "
            f"masks cover {100 * area / (n_masks * hw[0] * hw[1]):.1f}% of their images)\n"
        )
        print("| step | tasks | masks | wall s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        wall, peak = run_measured(
            "import json; json.loads(open(sys.argv[1]).read())", [str(source)]
        )
        print(f"| read the JSON only | {args.tasks} | {n_masks} | {wall:.1f} | {peak:.0f} |")
        formats = " + ".join(args.formats)
        library = (
            "import json; from zerolabel.formats.export import export; "
            "export(json.loads(open(sys.argv[1]).read()), sys.argv[2], formats=sys.argv[3:])"
        )
        wall, peak = run_measured(library, [str(source), str(out), *args.formats])
        step = f"read + `export()` to {formats} (library)"
        print(f"| {step} | {args.tasks} | {n_masks} | {wall:.1f} | {peak:.0f} |")
        cli = ["export", "--from-file", str(source), "-o", str(out)]
        for name in args.formats:
            cli += ["-f", name]
        wall, peak = run_measured(
            "from zerolabel.cli.main import main; main(sys.argv[1:], standalone_mode=False)", cli
        )
        step = f"`zerolabel export` to {formats} (CLI)"
        print(f"| {step} | {args.tasks} | {n_masks} | {wall:.1f} | {peak:.0f} |")
        if "coco" in args.formats:
            written = len(json.loads((out / "coco.json").read_text())["annotations"])
            if written != n_masks:
                raise SystemExit(f"coco.json holds {written} annotations, expected {n_masks}")
        decoded = n_masks * hw[0] * hw[1] / 2**30
        print(f"\nThe same masks held as [H, W] bool arrays would take {decoded:.1f} GiB.")


if __name__ == "__main__":
    main()
