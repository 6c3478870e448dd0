"""Queue throughput: the same images in-process, and through backend -> Redis -> 1 or 2 workers.

Every path runs the same spec on the same images with the same random ViT weights (no
download). The queue paths start a throw-away redis-server, a stand-in Label Studio that serves
the images under ``/data/upload/`` (it checks the token, as Label Studio does), ``zerolabel
serve`` and ``zerolabel worker`` processes, all on 127.0.0.1; one ``/predict`` call asks for every
image and waits for all of them. Images get distinct bytes so that no result comes from the
content cache. Per-stage seconds come from the workers' metrics ports. Prints a markdown table.
Usage::

    python bench/bench_queue.py                          # CPU, LOST, 32 images, batch 16
    python bench/bench_queue.py --method maskcut --images 64
    python bench/bench_queue.py --device cuda --images 512 --batch 32 --precision fp16
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import (  # noqa: E402
    free_port,
    redis_server,
    start_worker,
    stop,
    threaded_servers,
    wait_for,
    wait_for_workers,
)

CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
SOURCES = sorted((ROOT / "examples" / "voc2007" / "JPEGImages").glob("*.jpg"))
TOKEN = "bench-token"
STAGES = ("fetch", "decode", "preprocess", "forward", "method", "refine")


@dataclass
class Row:
    """One path's measurement."""

    name: str
    images: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds summed over images
    batches: str = ""

    def cells(self, baseline: float | None) -> str:
        per_image = 1000 * self.seconds / self.images
        share = f"{100 * (self.images / self.seconds) / baseline:.0f} %" if baseline else "100 %"
        stages = " | ".join(
            f"{1000 * self.stages[s] / self.images:.1f}" if s in self.stages else "–"
            for s in STAGES
        )
        return (
            f"| {self.name} | {self.images / self.seconds:.2f} | {share} | {per_image:.0f} "
            f"| {stages} | {self.batches or '–'} |"
        )


def make_images(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs with distinct bytes (a one-pixel change), decoded at the same cost."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        with Image.open(SOURCES[index % len(SOURCES)]) as image:
            pixels = np.array(image.convert("RGB"))
        pixels[0, 0] = [index % 256, (index // 256) % 256, 7]
        path = folder / f"bench-{index:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return paths


def random_checkpoint(path: Path) -> Path:
    """Seeded random DINO ViT-S/16 weights, so every path loads the same model offline."""
    import torch
    from zerolabel.vit.backbone import load_backbone

    torch.manual_seed(0)
    model = load_backbone("dino_vits16", device="cpu", random_weights=True).model
    torch.save(model.state_dict(), path)
    return path


def discovery_env(args: argparse.Namespace, checkpoint: Path) -> dict[str, str]:
    env = {
        "ZEROLABEL_METHOD": args.method,
        "ZEROLABEL_BACKBONE": "dino_vits16",
        "ZEROLABEL_CHECKPOINT": str(checkpoint),
        "ZEROLABEL_OFFLINE": "true",
        "ZEROLABEL_DEVICE": args.device,
        "ZEROLABEL_PRECISION": args.precision,
        "ZEROLABEL_BATCH_SIZE": str(args.batch),
        "ZEROLABEL_WORKER_BATCH": str(args.batch),
        "ZEROLABEL_LOG_LEVEL": "WARNING",
    }
    if args.max_side is not None:
        env["ZEROLABEL_MAX_SIDE"] = str(args.max_side)
    return env


def in_process(args: argparse.Namespace, env: dict[str, str], files: list[Path]) -> Row:
    """``zerolabel predict`` in this process (model loaded and warmed up first)."""
    from zerolabel.loop.predict import BatchJob
    from zerolabel.settings import WorkerSettings

    job = BatchJob.create(WorkerSettings.from_env({**os.environ, **env}))
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stderr(io.StringIO()):
        job.run(files[:1], Path(out))  # warm-up: first-call allocations
        timings = job.runner.timings
        before = (timings.preprocess_s, timings.forward_s, timings.method_s, timings.refine_s)
        start = time.perf_counter()
        job.run(files, Path(out))
        seconds = time.perf_counter() - start
    stages = {
        "preprocess": timings.preprocess_s - before[0],
        "forward": timings.forward_s - before[1],
        "method": timings.method_s - before[2],
        "refine": timings.refine_s - before[3],
    }
    return Row("in-process `zerolabel predict`", len(files), seconds, stages)


def _post(url: str, path: str, body: dict[str, object], timeout_s: float) -> dict[str, object]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        data: dict[str, object] = json.loads(answer.read())
    return data


def _predict(url: str, names: list[str], first_id: int, timeout_s: float) -> int:
    """One /predict for ``names``; the number of tasks answered with regions or none."""
    tasks = [
        {"id": first_id + i, "data": {"image": f"/data/upload/1/{name}"}}
        for i, name in enumerate(names)
    ]
    answer = _post(
        url, "/predict", {"project": "1.1", "label_config": CONFIG, "tasks": tasks}, timeout_s
    )
    results = answer.get("results")
    return (
        sum(1 for r in results if isinstance(r, dict) and "result" in r)
        if isinstance(results, list)
        else 0
    )


def _scrape(ports: list[int]) -> dict[str, float]:
    """Per-stage seconds (``stage:<name>``) and batch-size sum and count, over the workers."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = None
                if sample.name == "zerolabel_worker_stage_seconds_sum":
                    key = "stage:" + sample.labels.get("stage", "")
                elif sample.name.startswith("zerolabel_worker_batch_size_"):
                    key = sample.name.removeprefix("zerolabel_worker_")
                if key is not None:
                    totals[key] = totals.get(key, 0.0) + sample.value
    return totals


@contextlib.contextmanager
def label_studio_stand_in(folder: Path) -> Iterator[str]:
    """Serves ``folder`` under /data/upload/1/ to requests carrying the token."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.split("?")[0].removeprefix("/data/upload/1/")
            path = folder / name
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self.send_error(401)
            elif "/" in name or not path.is_file():
                self.send_error(404)
            else:
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    with threaded_servers() as serve:
        server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        yield f"http://127.0.0.1:{server.server_address[1]}"


def through_queue(
    args: argparse.Namespace, env: dict[str, str], files: list[Path], workers: int, tmp: Path
) -> Row:
    """backend -> Redis -> ``workers`` worker processes, one /predict for every image."""
    (tmp / f"redis-{workers}").mkdir()
    with (
        redis_server(tmp / f"redis-{workers}") as (redis_url, _),
        label_studio_stand_in(files[0].parent) as ls_url,
    ):
        ports = [free_port() for _ in range(workers)]
        common = {
            **env,
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": ls_url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            "ZEROLABEL_WAIT_TIMEOUT_S": str(args.timeout_s),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
        }
        processes = [
            start_worker({**common, "ZEROLABEL_METRICS_PORT": str(port)}, tmp / f"w{i}.log")
            for i, port in enumerate(ports)
        ]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        backend = subprocess.Popen(
            [sys.executable, "-m", "zerolabel_backend", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **common},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for_workers(redis_url, workers, timeout_s=120)
            wait_for(lambda: _health(url), 60, "backend")
            names = [f.name for f in files]
            for i in range(workers):  # warm-up: each worker loads its model
                _predict(url, [names[i]], 10_000 + i, args.timeout_s)
            before = _scrape(ports)
            rest = names[workers:]
            start = time.perf_counter()
            answered = _predict(url, rest, 1, args.timeout_s)
            seconds = time.perf_counter() - start
            after = _scrape(ports)
        finally:
            stop(backend)
            for process in processes:
                stop(process)
    if answered != len(rest):
        raise SystemExit(f"only {answered} of {len(rest)} tasks answered: raise --timeout-s")
    gained = {k: v - before.get(k, 0.0) for k, v in after.items()}
    stages = {k.removeprefix("stage:"): v for k, v in gained.items() if k.startswith("stage:")}
    runs = gained.get("batch_size_count", 0.0)
    sizes = f"{gained.get('batch_size_sum', 0.0) / runs:.1f} mean" if runs else ""
    label = f"backend → Redis → {workers} worker{'s' if workers > 1 else ''}"
    return Row(label, len(rest), seconds, stages, sizes)


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lost")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="worker batch and forward batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--max-side", type=int, default=480)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = make_images(tmp / "images", args.images)
        env = discovery_env(args, random_checkpoint(tmp / "vits16-random.pth"))
        rows = [in_process(args, env, files)]
        rows += [through_queue(args, env, files, n, tmp) for n in args.workers]

    baseline = rows[0].images / rows[0].seconds
    print(
        f"\n### Queue throughput: {args.method}, ViT-S/16 (random weights), {args.max_side} px, "
        f"batch {args.batch}, {args.device} {args.precision}, {os.cpu_count()} CPU cores\n"
    )
    print(
        "| path | images/s | vs in-process | ms/image | "
        + " | ".join(f"{s} ms" for s in STAGES)
        + " | batch size |"
    )
    print("|---|---|---|---|" + "---|" * len(STAGES) + "---|")
    for index, row in enumerate(rows):
        print(row.cells(None if index == 0 else baseline))
    overhead = 1000 * (rows[1].seconds / rows[1].images - rows[0].seconds / rows[0].images)
    print(f"\nQueue overhead per image with 1 worker (vs in-process): {overhead:.1f} ms.")


if __name__ == "__main__":
    main()
