"""Loop benchmark: the time of each step of the labeling loop, per unit and per 1 000 images.

Each step runs as its ``zerolabel`` command in a process of its own, as a user runs it, twice:
on one unit (an image, a task, a few iterations) and on all of them. The difference gives the
seconds per unit, the rest is the step's start-up (Python and torch imports, model loading,
writing files), and the two give the "for 1 000 images" column::

    per unit = (T_all - T_one) / (n_all - n_one)      start-up = T_one - n_one * per unit

The inputs are the example photos (``examples/voc2007`` and ``examples/coco8``) resized so that
their longer side is ``--side`` (1024 by default: the cap LOST and TokenCut apply to larger
photos, so every method sees the input it would see on a camera's photo), and a ViT-S/16 with
seeded random weights saved as a checkpoint file (speed does not depend on weight values).
The steps chain as in the README's loop: MaskCut's tasks are clustered, exported (COCO, YOLO,
VOC, images copied), the export trains the detector (Mask R-CNN at its default sizes unless
``--cad-min-size`` / ``--cad-max-size`` say otherwise), and ``eval`` scores the MaskCut
predictions against annotations that accept them as they are. Prints markdown tables.
Usage::

    python bench/bench_loop.py                           # every step; train-cad's take longest
    python bench/bench_loop.py --only predict-lost cluster
    python bench/bench_loop.py --only train-cad --cad-iterations 2 12 --cad-total 2000
    python bench/bench_loop.py --quick                   # smoke: small images, few iterations
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from zerolabel.loop.pseudo_classes import object_boxes
from zerolabel.vit.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [
    *sorted((ROOT / "examples" / "voc2007" / "JPEGImages").glob("*.jpg")),
    *sorted((ROOT / "examples" / "coco8" / "images").glob("*.jpg")),
]
STEPS = ("predict-lost", "predict-maskcut", "cluster", "export", "train-cad", "eval")
CLI = "from zerolabel.cli.main import main; main(prog_name='zerolabel')"
WARM_UP = "import torch, torchvision, timm, zerolabel.pipeline, zerolabel.cad"
QUICK = {"side": 224, "images": 3, "cad_iterations": (1, 2), "cad_sizes": (128, 224)}
"""``--quick``: sizes at which every step runs in seconds, to check the script, not to quote."""


@dataclass(frozen=True)
class Timing:
    """One step measured at two sizes: ``n_one`` and ``n_all`` units took ``t_one``, ``t_all``."""

    step: str
    unit: str
    n_one: int
    t_one: float
    n_all: int
    t_all: float

    @property
    def per_unit(self) -> float:
        """Seconds each further unit costs."""
        return (self.t_all - self.t_one) / (self.n_all - self.n_one)

    @property
    def startup(self) -> float:
        """Seconds of the run that do not grow with the units (imports, model load, writing)."""
        return self.t_one - self.n_one * self.per_unit

    def extrapolate(self, units: float) -> float:
        """Seconds for ``units`` units, start-up included."""
        return self.startup + units * self.per_unit


class Bench:
    """The work folder, the photos, the random checkpoint and the ``zerolabel`` runs."""

    def __init__(self, work: Path, device: str, side: int, n_images: int, repeats: int) -> None:
        self.work = work
        self.device = device
        self.repeats = repeats
        self.photos = work / "photos"
        self.files = _resized_photos(self.photos, side, n_images)
        self.checkpoint = work / "vits16-random.pth"
        torch.manual_seed(0)
        model = load_backbone("dino_vits16", device="cpu", random_weights=True).model
        torch.save(model.state_dict(), self.checkpoint)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("ZEROLABEL_", "LABEL_STUDIO_"))
        } | {"ZEROLABEL_OFFLINE": "true", "ZEROLABEL_DEVICE": device}
        self._run([sys.executable, "-c", WARM_UP])  # the first run must not pay for a cold disk

    def zerolabel(self, *args: str) -> float:
        """Run ``zerolabel ARGS`` in a new process ``--repeats`` times; the median wall time in
        seconds. A run that resumes from files (``train-cad``) starts from an empty folder."""
        times = []
        for _ in range(self.repeats):
            out = Path(self.work, args[args.index("-o") + 1]) if "-o" in args else None
            if out is not None and out.exists():
                shutil.rmtree(out)
            times.append(self._run([sys.executable, "-c", CLI, *args]))
        return statistics.median(times)

    def _run(self, command: list[str]) -> float:
        """The wall time of ``command`` in seconds.

        Raises:
            SystemExit: the command failed (its last output lines are shown).
        """
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=self.work, env=self.env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
            raise SystemExit(f"{' '.join(command[3:])} failed ({done.returncode}):\n{tail}")
        return elapsed

    def predict(self, method: str, files: Sequence[Path], out: str) -> float:
        """``zerolabel predict`` of ``files`` with ``method`` at its default input size."""
        return self.zerolabel(
            "predict",
            *map(str, files),
            "-m",
            method,
            "-c",
            str(self.checkpoint),
            "--document-root",
            str(self.photos),
            "-o",
            out,
        )


def _resized_photos(folder: Path, side: int, count: int) -> list[Path]:
    """``count`` example photos (repeated when more are asked for) with longer side ``side``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        source = Image.open(EXAMPLES[i % len(EXAMPLES)]).convert("RGB")
        scale = side / max(source.size)
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        path = folder / f"{i:04d}-{EXAMPLES[i % len(EXAMPLES)].stem}.jpg"
        source.resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def _write_tasks(tasks: list[dict[str, Any]], path: Path) -> Path:
    path.write_text(json.dumps(tasks))
    return path


def _objects(task: dict[str, Any]) -> int:
    """Objects of a task's (last) prediction, as ``cluster`` and ``export`` count them."""
    predictions = task.get("predictions") or []
    return len(object_boxes(predictions[-1]["result"])) if predictions else 0


def bench_predict(bench: Bench, method: str) -> Timing:
    one = bench.predict(method, bench.files[:1], f"predict-{method}-one")
    every = bench.predict(method, bench.files, f"predict-{method}")
    return Timing(f"predict-{method}", "image", 1, one, len(bench.files), every)


def maskcut_tasks(bench: Bench) -> list[dict[str, Any]]:
    """The tasks of ``predict -m maskcut`` on every photo (run here when not benchmarked)."""
    path = bench.work / "predict-maskcut" / "tasks.json"
    if not path.exists():
        bench.predict("maskcut", bench.files, "predict-maskcut")
    tasks: list[dict[str, Any]] = json.loads(path.read_text())
    return tasks


def bench_cluster(bench: Bench, tasks: list[dict[str, Any]]) -> Timing:
    """``cluster -k 2`` on the first tasks holding 2 objects, then on all (fresh caches)."""
    first, count = 0, 0
    while count < 2 and first < len(tasks):
        count += _objects(tasks[first])
        first += 1
    total = sum(_objects(task) for task in tasks)
    if count < 2 or total == count:
        raise SystemExit("cluster: MaskCut found too few objects to time; give more --images")
    times = []
    for name, subset in (("one", tasks[:first]), ("all", tasks)):
        path = _write_tasks(subset, bench.work / f"cluster-{name}.json")
        times.append(
            bench.zerolabel(
                "cluster",
                str(path),
                "-k",
                "2",
                "-c",
                str(bench.checkpoint),
                "--document-root",
                str(bench.photos),
                "--cache-dir",
                str(bench.work / f"descriptors-{name}"),
                "-o",
                f"cluster-{name}",
            )
        )
    return Timing("cluster", "object", count, times[0], total, times[1])


def _export(bench: Bench, tasks: list[dict[str, Any]], name: str) -> float:
    path = _write_tasks(tasks, bench.work / f"{name}.json")
    return bench.zerolabel(
        "export",
        "--from-file",
        str(path),
        "--source",
        "predictions",
        "--download-images",
        "--document-root",
        str(bench.photos),
        "-o",
        name,
    )


def bench_export(bench: Bench, tasks: list[dict[str, Any]]) -> Timing:
    one = _export(bench, tasks[:1], "export-one")
    every = _export(bench, tasks, "export")
    return Timing("export", "task", 1, one, len(tasks), every)


def bench_train_cad(
    bench: Bench, tasks: list[dict[str, Any]], iterations: tuple[int, int], sizes: Sequence[int]
) -> Timing:
    """``train-cad`` on the export of every task, for two iteration counts (fresh folders)."""
    export = bench.work / "export"
    if not (export / "coco.json").exists():
        _export(bench, tasks, "export")
    size_args = ["--min-size", str(sizes[0]), "--max-size", str(sizes[1])] if sizes else []
    times = [
        bench.zerolabel(
            "train-cad",
            "--coco",
            str(export / "coco.json"),
            "--images",
            str(export / "images"),
            "-o",
            f"cad-{count}",
            "--iterations",
            str(count),
            "--device",
            bench.device,
            *size_args,
        )
        for count in iterations
    ]
    return Timing("train-cad", "iteration", iterations[0], times[0], iterations[1], times[1])


def _accepted(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks as an export of a project whose annotators accepted every prediction."""
    out = []
    for number, task in enumerate(tasks, start=1):
        result = task["predictions"][-1]["result"] if task.get("predictions") else []
        annotation = {"id": number, "result": result, "was_cancelled": False}
        out.append({**task, "id": number, "annotations": [annotation]})
    return out


def bench_eval(bench: Bench, tasks: list[dict[str, Any]]) -> Timing:
    accepted = _accepted(tasks)
    times = []
    for name, subset in (("one", accepted[:1]), ("all", accepted)):
        path = _write_tasks(subset, bench.work / f"eval-{name}.json")
        times.append(bench.zerolabel("eval", "--from-file", str(path)))
    return Timing("eval", "task", 1, times[0], len(accepted), times[1])


def _duration(seconds: float) -> str:
    """``~12 s``, ``~8 min``, ``~3.5 h``: the rounding an extrapolation deserves."""
    if seconds <= 0:
        return "n/a (noise above the cost: more --images or --repeats)"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def rows(
    timings: dict[str, Timing], objects_per_image: float, cad_total: int, labels: dict[str, str]
) -> list[str]:
    """The README's table rows, in the loop's order."""
    out = []
    for step in STEPS:
        if step not in timings:
            continue
        t = timings[step]
        if step == "train-cad":
            count = f"{cad_total:,}".replace(",", " ")
            total = f"{_duration(t.extrapolate(cad_total))} for {count} iterations"
        elif step == "cluster":
            total = (
                f"{_duration(t.extrapolate(1000 * objects_per_image))} at "
                f"{objects_per_image:.1f} objects per image"
            )
        else:
            total = _duration(t.extrapolate(1000))
        per = f"{t.per_unit:.2f} s per {t.unit}" if t.per_unit > 0 else "n/a"
        startup = t.startup if t.per_unit > 0 else t.t_one  # all of it, as far as can be told
        out.append(f"| {labels[step]} | {per} | {startup:.1f} s | {total} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--side", type=int, default=None, help="longer side of the photos [1024]")
    parser.add_argument("--images", type=int, default=None, help="photos [21: every example]")
    parser.add_argument(
        "--cad-iterations",
        type=int,
        nargs=2,
        default=None,
        metavar=("FEW", "MORE"),
        help="the two train-cad runs [2 10]",
    )
    parser.add_argument(
        "--cad-total", type=int, default=2000, help="iterations the extrapolation is for [2000]"
    )
    parser.add_argument("--cad-min-size", type=int, default=None, help="[train-cad's default]")
    parser.add_argument("--cad-max-size", type=int, default=None, help="[train-cad's default]")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the median [1]")
    parser.add_argument("--quick", action="store_true", help="small sizes: check the script")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files")
    args = parser.parse_args()
    quick = QUICK if args.quick else {}
    side = args.side or quick.get("side", 1024)
    n_images = args.images or quick.get("images", len(EXAMPLES))
    iterations = tuple(args.cad_iterations or quick.get("cad_iterations", (2, 10)))
    sizes = [args.cad_min_size, args.cad_max_size]
    cad_sizes = quick.get("cad_sizes", ()) if sizes == [None, None] else sizes
    if n_images < 2 or iterations[0] >= iterations[1] or None in cad_sizes or args.repeats < 1:
        parser.error(
            "give --images 2 or more, --cad-iterations FEW MORE with FEW < MORE, both "
            "--cad-min-size and --cad-max-size or neither, and --repeats 1 or more"
        )
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(work, args.device, side, n_images, args.repeats)
        timings: dict[str, Timing] = {}
        for method in ("lost", "maskcut"):
            if f"predict-{method}" in args.only:
                timings[f"predict-{method}"] = bench_predict(bench, method)
        tasks = maskcut_tasks(bench) if set(args.only) - {"predict-lost"} else []
        if "cluster" in args.only:
            timings["cluster"] = bench_cluster(bench, tasks)
        if "export" in args.only:
            timings["export"] = bench_export(bench, tasks)
        if "train-cad" in args.only:
            timings["train-cad"] = bench_train_cad(bench, tasks, iterations, cad_sizes)
        if "eval" in args.only:
            timings["eval"] = bench_eval(bench, tasks)
    objects = sum(_objects(task) for task in tasks) / max(1, len(tasks))
    cad = f"min {cad_sizes[0]} / max {cad_sizes[1]} px" if cad_sizes else "default sizes"
    labels = {
        "predict-lost": f"1. predict, LOST (longer side {min(side, 1024)})",
        "predict-maskcut": f"1. predict, MaskCut (longer side {min(side, 480)}, CRF on)",
        "cluster": "2. cluster (one crop descriptor per object; cached)",
        "export": "4. export (COCO, YOLO, VOC; images copied)",
        "train-cad": f"5. train-cad (Mask R-CNN R50-FPN, {cad})",
        "eval": "7. eval",
    }
    print(
        f"\n### Time per step of the loop: `python bench/bench_loop.py` ({args.device}, "
        f"{n_images} example photos at longer side {side} px, ViT-S/16 with seeded random "
        "weights)\n"
    )
    print("| step | per unit | start-up | for 1 000 images |")
    print("|---|---|---|---|")
    print("\n".join(rows(timings, objects, args.cad_total, labels)))
    print("\n| step | unit | units, short run | s | units, long run | s |")
    print("|---|---|---|---|---|---|")
    for t in timings.values():
        print(f"| {t.step} | {t.unit} | {t.n_one} | {t.t_one:.1f} | {t.n_all} | {t.t_all:.1f} |")


if __name__ == "__main__":
    main()
