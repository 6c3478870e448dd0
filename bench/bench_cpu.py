"""CPU precision and start-up: LOST on ViT-S/16 in fp32, bf16 and int8, against the authors'
way of running it, and how long a process takes to its first result.

Two tables:

- **Per image** (steady state, one process): load + preprocess + forward + LOST per image for
  this product in fp32, in bf16 (``--precision bf16``; on a CPU without bf16 instructions it
  runs fp32 and the row says so), in int8 (the linear layers dynamically quantized with
  ``torch.ao``: measured here to show why it is not offered), and the authors' way: an
  explicit-attention ViT in DINO's layout run whole with a hook on the last ``qkv``,
  torchvision's transforms, LOST as their paper and code state it. The paths run in turns,
  ``--rounds`` times; a row is its median round. Every path loads the same seeded random
  weights (speed does not depend on their values). Its last columns count the images whose
  LOST box is the same, pixel for pixel, as fp32's and as the authors' way's.
- **Start-up** (whole processes, in turns, median of ``--rounds``): ``zerolabel predict`` on one
  image from launch to exit, fp32 and bf16; the authors' way as a process; a ``zerolabel
  worker`` from launch to registered with RQ, and to the result of a ``/predict`` sent through
  the backend as soon as it is registered (redis-server, the backend and a stand-in Label
  Studio started first, on 127.0.0.1); and ``import torch`` alone, the part no process avoids.

Usage::

    python bench/bench_cpu.py                       # the example photos, 3 rounds
    python bench/bench_cpu.py IMAGES_DIR --rounds 5
    python bench/bench_cpu.py --only startup        # the start-up table only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SUFFIXES = {".jpg", ".jpeg", ".png"}
K_PATCHES = 100
"""LOST's k: the lowest-degree patches the seed's expansion is drawn from."""


def image_files(inputs: list[str]) -> list[Path]:
    paths: list[Path] = []
    for name in inputs:
        path = Path(name)
        found = sorted(path.rglob("*")) if path.is_dir() else [path]
        paths += [p for p in found if p.suffix.lower() in SUFFIXES]
    if not paths:
        raise SystemExit(f"no images in {' '.join(inputs)}")
    return paths


# --- the authors' way -------------------------------------------------------------------------


def authors_model(checkpoint: Path):  # noqa: ANN201 (torch is imported lazily)
    """DINO's ViT-S/16 as their code builds it: the module with its own initialisation, then
    the checkpoint's state dict loaded into it; attention written out."""
    import torch

    from tests.reference_dino import ReferenceDino

    model = ReferenceDino(patch=16, dim=384, depth=12, heads=6)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    return model.eval()


def authors_box(model, path: Path) -> tuple[int, int, int, int]:  # noqa: ANN001
    """One image as the authors run LOST: full resolution, ImageNet normalisation, zero padding
    to whole patches, the whole network run with a hook on the last block's ``qkv``."""
    import numpy as np
    import scipy.ndimage
    import torch
    from PIL import Image
    from torchvision import transforms

    normalise = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    with open(path, "rb") as file:
        image = Image.open(file).convert("RGB")
    tensor = normalise(image)
    p = model.patch
    height, width = tensor.shape[1:]
    padded = torch.zeros(3, -(-height // p) * p, -(-width // p) * p)
    padded[:, :height, :width] = tensor
    rows, cols = padded.shape[1] // p, padded.shape[2] // p
    captured: dict[str, torch.Tensor] = {}
    last = model.blocks[-1].attn
    hook = last.qkv.register_forward_hook(lambda _m, _i, out: captured.__setitem__("qkv", out))
    with torch.no_grad():
        x = model.patch_embed.proj(padded[None]).flatten(2).transpose(1, 2)
        x = torch.cat([model.cls_token, x], dim=1) + model.positions(rows, cols)
        for block in model.blocks:
            x = block(x)
        model.norm(x)
    hook.remove()
    tokens, dim = captured["qkv"].shape[1], captured["qkv"].shape[2] // 3
    keys = captured["qkv"][0, 1:, dim : 2 * dim]  # [N, dim], heads concatenated
    assert keys.shape[0] == tokens - 1 == rows * cols
    # LOST: raw key correlations, degree = count of positive ones, seed = lowest degree.
    a = keys @ keys.T
    order = torch.argsort((a > 0).sum(-1), stable=True)
    seed = int(order[0])
    candidates = order[:K_PATCHES]
    similar = candidates[a[seed, candidates] > 0]
    correlation = a[similar].sum(0).reshape(rows, cols).numpy()
    labels, _ = scipy.ndimage.label(correlation > 0)  # 4-connected
    ys, xs = np.nonzero(labels == labels[seed // cols, seed % cols])
    box = (xs.min() * p, ys.min() * p, (xs.max() + 1) * p, (ys.max() + 1) * p)
    return (int(box[0]), int(box[1]), min(int(box[2]), width), min(int(box[3]), height))


def authors_process(checkpoint: Path, paths: list[Path]) -> None:
    """``--authors-run``: the authors' way as a whole process (imports, model, images)."""
    import torch  # noqa: F401  (their script imports it first, like this)

    model = authors_model(checkpoint)
    for path in paths:
        print(path.name, *authors_box(model, path))


# --- this product -----------------------------------------------------------------------------


@dataclass
class Mode:
    name: str
    boxes: Callable[[Path], tuple[int, int, int, int] | None]
    note: str = ""


def product_mode(checkpoint: Path, precision: str, int8: bool = False) -> Mode:
    import torch
    from zerolabel.contract import DiscoverySpec
    from zerolabel.io.images import ImageLimits, load_file
    from zerolabel.pipeline import Discoverer
    from zerolabel.vit.backbone import load_backbone

    backbone = load_backbone(
        "dino_vits16", checkpoint=checkpoint, device="cpu", precision=precision, offline=True
    )
    note = ""
    if precision == "bf16" and backbone.autocast is None:
        note = "no bf16 instructions: ran fp32"
    if int8:
        with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated
            warnings.simplefilter("ignore")
            backbone.model = torch.ao.quantization.quantize_dynamic(
                backbone.model, {torch.nn.Linear}, dtype=torch.qint8
            )
        backbone.blocks = backbone.model.blocks
    spec = DiscoverySpec(method="lost")
    discoverer = Discoverer(backbone, spec)
    limits = ImageLimits()

    def box(path: Path) -> tuple[int, int, int, int] | None:
        image = load_file(path, limits, max_side=spec.effective_max_side())
        regions = discoverer.run([image], batch_size=1)[0]
        if not regions:
            return None
        b = regions[0].box.to_list()
        return (round(b[0]), round(b[1]), round(b[2]), round(b[3]))

    name = "this product, int8 linear layers" if int8 else f"this product, {precision}"
    return Mode(name, box, note)


def per_image(args: argparse.Namespace, paths: list[Path], checkpoint: Path) -> None:
    import torch

    authors = authors_model(checkpoint)
    modes = [
        product_mode(checkpoint, "fp32"),
        product_mode(checkpoint, "bf16"),
        product_mode(checkpoint, "fp32", int8=True),
        Mode("the authors' way (fp32)", lambda path: authors_box(authors, path)),
    ]
    boxes: dict[str, list[object]] = {}
    seconds: dict[str, list[float]] = {m.name: [] for m in modes}
    for mode in modes:
        mode.boxes(paths[0])  # warm-up: first-call allocations, oneDNN kernel choice
    for _ in range(args.rounds):
        for mode in modes:
            start = time.perf_counter()
            boxes[mode.name] = [mode.boxes(path) for path in paths]
            seconds[mode.name].append(time.perf_counter() - start)
    fp32 = modes[0].name
    reference = modes[-1].name
    ms = {name: 1000 * statistics.median(s) / len(paths) for name, s in seconds.items()}
    print(
        f"\n### LOST per image, ViT-S/16, {len(paths)} images, CPU ({torch.get_num_threads()} "
        f"threads), median of {args.rounds} rounds: `python bench/bench_cpu.py`\n"
    )
    print("| path | ms / image | vs fp32 | boxes as fp32 | boxes as the authors' way | note |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        same_fp32 = sum(a == b for a, b in zip(boxes[mode.name], boxes[fp32], strict=True))
        same_ref = sum(a == b for a, b in zip(boxes[mode.name], boxes[reference], strict=True))
        print(
            f"| {mode.name} | {ms[mode.name]:.0f} | {ms[fp32] / ms[mode.name]:.2f}x | "
            f"{same_fp32}/{len(paths)} | {same_ref}/{len(paths)} | {mode.note} |"
        )


# --- start-up ---------------------------------------------------------------------------------


def _wall(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        command,
        check=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def start_up(args: argparse.Namespace, image: Path, checkpoint: Path, tmp: Path) -> None:
    zerolabel = [sys.executable, "-m", "zerolabel.cli.main"]
    runs: dict[str, Callable[[], float]] = {
        f"`zerolabel predict` {precision}, launch to exit": (
            lambda precision=precision: _wall(
                [*zerolabel, "predict", str(image), "-c", str(checkpoint), "--device", "cpu"]
                + ["--precision", precision, "-o", str(tmp / f"out-{precision}")],
                {"ZEROLABEL_OFFLINE": "1"},
            )
        )
        for precision in ("fp32", "bf16")
    }
    runs["`python -c 'import torch'` (the floor of every row)"] = lambda: _wall(
        [sys.executable, "-c", "import torch"]
    )
    runs["the authors' way, launch to exit"] = lambda: _wall(
        [sys.executable, __file__, "--authors-run", str(checkpoint), str(image)]
    )
    walls: dict[str, list[float]] = {name: [] for name in runs}
    worker_ready: list[float] = []
    worker_first: list[float] = []
    with _queue_stack(image, checkpoint, tmp) as start_worker_once:
        for _ in range(args.rounds):
            for name, run in runs.items():
                walls[name].append(run())
            ready, first = start_worker_once()
            worker_ready.append(ready)
            worker_first.append(first)
    print(
        f"\n### Start-up, one image ({image.name}), whole processes in turns, median of "
        f"{args.rounds}: `python bench/bench_cpu.py`\n"
    )
    print("| process | seconds |")
    print("|---|---|")
    for name, values in walls.items():
        print(f"| {name} | {statistics.median(values):.2f} |")
    print(f"| `zerolabel worker`, launch to registered | {statistics.median(worker_ready):.2f} |")
    print(
        "| `zerolabel worker`, launch to the first `/predict` answered "
        f"| {statistics.median(worker_first):.2f} |"
    )


class _queue_stack:  # noqa: N801 (used as a context manager, like contextlib's)
    """redis-server, a stand-in Label Studio serving the image, and the backend; yields a
    function that starts one worker, times it and stops it."""

    def __init__(self, image: Path, checkpoint: Path, tmp: Path) -> None:
        self.image, self.checkpoint, self.tmp = image, checkpoint, tmp

    def __enter__(self) -> Callable[[], tuple[float, float]]:
        import contextlib

        from bench.bench_queue import TOKEN, _health, _predict, label_studio_stand_in
        from tests.servers import (
            free_port,
            redis_server,
            start_backend,
            start_worker,
            stop,
            wait_for,
        )

        self._stack = contextlib.ExitStack()
        folder = self.tmp / "served"
        folder.mkdir()
        redis_url, _ = self._stack.enter_context(redis_server(self.tmp))
        ls_url = self._stack.enter_context(label_studio_stand_in(folder))
        env = {
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            "ZEROLABEL_METHOD": "lost",
            "ZEROLABEL_CHECKPOINT": str(self.checkpoint),
            "ZEROLABEL_OFFLINE": "1",
            "ZEROLABEL_DEVICE": "cpu",
            "ZEROLABEL_LOG_LEVEL": "WARNING",
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        backend = start_backend(env, port, quiet=True)
        self._stack.callback(stop, backend)
        wait_for(lambda: _health(url), 60, "backend")
        counter = iter(range(1, 1_000_000))

        def once() -> tuple[float, float]:
            from redis import Redis

            connection = Redis.from_url(redis_url)
            task = next(counter)
            name = f"bench-start-{task}"
            image_url = f"{ls_url}/data/upload/1/{_distinct_copy(self.image, folder, task)}"
            start = time.perf_counter()
            worker = start_worker(env, self.tmp / f"{name}.log", name)
            try:
                wait_for(lambda: _registered(connection, name), 60, "worker", 0.01)
                ready = time.perf_counter() - start
                if _predict(url, [image_url], task, 60) != 1:
                    raise SystemExit(f"the worker answered no result: see {name}.log")
                return ready, time.perf_counter() - start
            finally:
                stop(worker, timeout_s=60)

        return once

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def _distinct_copy(image: Path, folder: Path, index: int) -> str:
    """A copy of ``image`` with one pixel changed (so no cached result answers it); its name."""
    import numpy as np
    from PIL import Image

    with Image.open(image) as opened:
        pixels = np.array(opened.convert("RGB"))
    pixels[0, 0] = [index % 256, (index // 256) % 256, 7]
    name = f"start-{index}.jpg"
    Image.fromarray(pixels).save(folder / name, quality=92)
    return name


def _registered(connection: object, name: str) -> bool:
    from rq import Worker

    return any(worker.name == name for worker in Worker.all(connection=connection))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", default=[str(ROOT / "examples")])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("images", "startup"), help="one of the two tables")
    parser.add_argument("--authors-run", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.authors_run:
        authors_process(Path(args.authors_run), image_files(args.images))
        return
    from bench.bench_queue import random_checkpoint  # seeded ViT-S/16, DINO's layout

    paths = image_files(args.images)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        checkpoint = random_checkpoint(tmp / "random_vits16.pth")
        if args.only != "startup":
            per_image(args, paths, checkpoint)
        if args.only != "images":
            start_up(args, paths[0], checkpoint, tmp)


if __name__ == "__main__":
    main()
