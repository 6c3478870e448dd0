"""Queue throughput: the same images in-process, and through backend -> Redis -> 1 or 2 workers.

Every path runs the same spec on the same images with the same random ViT weights (no
download). The queue paths start a throw-away redis-server, the images' server, ``zerolabel
serve`` and ``zerolabel worker`` processes, all on 127.0.0.1; one ``/predict`` call asks for every
image and waits for all of them. The images' server is a stand-in Label Studio that serves them
under ``/data/upload/`` to token-bearing requests, or with ``--label-studio`` a real Label Studio
(``ZEROLABEL_LS_BIN`` or ``label-studio`` on the PATH) the images are uploaded to; then each
worker count runs twice: workers downloading the uploads, and workers reading them from Label
Studio's media folder (``ZEROLABEL_LABEL_STUDIO_MEDIA``). Images get distinct bytes so that no
result comes from the content cache. Every path is started first; then ``--repeat`` rounds run
each path in turn on fresh images, so all paths share the machine's drift (timings here vary by
10 % or more from minute to minute). A path's row is its median round; "vs in-process" is the
median of its per-round ratios to the in-process path.
Per-stage seconds come from the workers' metrics ports.
Prints markdown tables: throughput with the stages per image, and fetching and decoding alone
(one thread, no forward pass running). Usage::

    python bench/bench_queue.py                          # CPU, LOST, 32 images, batch 16
    python bench/bench_queue.py --label-studio --images 64 --workers 1
    python bench/bench_queue.py --method maskcut --images 64
    python bench/bench_queue.py --device cuda --images 512 --batch 32 --precision fp16
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import (  # noqa: E402
    ReplyHandler,
    free_port,
    redis_server,
    start_backend,
    start_worker,
    stop,
    threaded_servers,
    wait_for,
    wait_for_workers,
)

CONFIG = (ROOT / "examples" / "label_config.xml").read_text()
SOURCES = sorted((ROOT / "examples" / "voc2007" / "JPEGImages").glob("*.jpg"))
TOKEN = "bench-token"
STAGES = ("fetch", "decode", "claim", "wait", "finish", "preprocess", "forward", "method", "refine")
OUTSIDE = ("claim", "wait", "finish")
"""The worker's time per image outside the model: fetch and decode run in download threads and
count only where the device waits for them (``wait``)."""


@dataclass
class Row:
    """One path's measurement."""

    name: str
    images: int
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds summed over images
    batches: str = ""

    def cells(self, ratio: float | None) -> str:
        """The table row; ``ratio``: images/s relative to in-process (None: this is it)."""
        per_image = 1000 * self.seconds / self.images
        share = f"{100 * ratio:.0f} %" if ratio is not None else "100 %"
        stages = " | ".join(self._ms(s) for s in STAGES)
        outside = (
            f"{sum(1000 * self.stages[s] / self.images for s in OUTSIDE):.1f}"
            if all(s in self.stages for s in OUTSIDE)
            else "–"
        )
        return (
            f"| {self.name} | {self.images / self.seconds:.2f} | {share} | {per_image:.0f} "
            f"| {stages} | {outside} | {self.batches or '–'} |"
        )

    def _ms(self, stage: str) -> str:
        return f"{1000 * self.stages[stage] / self.images:.1f}" if stage in self.stages else "–"


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


def median(rows: list[Row]) -> Row:
    """The round with the median wall-clock time (the slower middle one for an even count)."""
    return sorted(rows, key=lambda row: row.seconds)[len(rows) // 2]


def median_ratio(rows: list[Row], baseline: list[Row]) -> float:
    """The median over rounds of images/s relative to the baseline's same round."""
    ratios = sorted((b.seconds / r.seconds) for r, b in zip(rows, baseline, strict=True))
    return ratios[len(ratios) // 2]


@contextlib.contextmanager
def in_process(
    args: argparse.Namespace, env: dict[str, str], rounds: list[list[Path]], spare: Path
) -> Iterator[Callable[[int], Row]]:
    """``zerolabel predict`` in this process (model loaded and warmed up on ``spare`` first);
    yields: round index -> its row."""
    from zerolabel.loop.predict import BatchJob
    from zerolabel.settings import WorkerSettings

    job = BatchJob.create(WorkerSettings.from_env({**os.environ, **env}))
    with tempfile.TemporaryDirectory() as out:
        with contextlib.redirect_stderr(io.StringIO()):
            job.run([spare], Path(out))  # warm-up: first-call allocations

        def run(index: int) -> Row:
            files, timings = rounds[index], job.runner.timings
            before = dataclasses.replace(timings)
            with contextlib.redirect_stderr(io.StringIO()):
                start = time.perf_counter()
                job.run(files, Path(out))
                seconds = time.perf_counter() - start
            stages = {
                stage: getattr(timings, f"{stage}_s") - getattr(before, f"{stage}_s")
                for stage in ("preprocess", "forward", "method", "refine")
            }
            return Row("in-process `zerolabel predict`", len(files), seconds, stages)

        yield run


def _post(url: str, path: str, body: dict[str, object], timeout_s: float) -> dict[str, object]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        data: dict[str, object] = json.loads(answer.read())
    return data


def _predict(url: str, images: list[str], first_id: int, timeout_s: float) -> int:
    """One /predict for the image URLs; the number of tasks answered with regions or none."""
    tasks = [{"id": first_id + i, "data": {"image": image}} for i, image in enumerate(images)]
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


@dataclass(frozen=True)
class Images:
    """Where the queue paths fetch the images: a Label Studio URL, its token, one URL each, and
    Label Studio's media folder when it runs here."""

    ls_url: str
    token: str
    urls: list[str]
    media: str | None = None

    def rounds(self, count: int, size: int) -> list[list[str]]:
        """``count`` rounds of ``size`` distinct images (the warm-up images come after them)."""
        return [self.urls[r * size : (r + 1) * size] for r in range(count)]


@contextlib.contextmanager
def image_source(args: argparse.Namespace, files: list[Path], tmp: Path) -> Iterator[Images]:
    """The stand-in serving ``files``, or a real Label Studio they are uploaded to."""
    if not args.label_studio:
        with label_studio_stand_in(files[0].parent) as url:
            yield Images(url, TOKEN, [f"/data/upload/1/{f.name}" for f in files])
        return
    from tests.ls_server import label_studio_binary, label_studio_server

    binary = label_studio_binary()
    if binary is None:
        raise SystemExit("--label-studio: set ZEROLABEL_LS_BIN or put label-studio on the PATH")
    (tmp / "ls-data").mkdir()
    (tmp / "ls-root").mkdir()
    with label_studio_server(binary, tmp / "ls-data", tmp / "ls-root", 600) as ls:
        project = ls.create_project("bench")
        for path in files:
            with path.open("rb") as handle:
                ls.api("POST", f"/api/projects/{project}/import", files={"file": handle})
        reply = ls.api("GET", f"/api/tasks?project={project}&page_size={len(files)}").json()
        uploaded = [task["data"]["image"] for task in reply["tasks"]]
        # /data/upload/<project>/<hash>-<name>
        by_name = {url.rsplit("/", 1)[-1].split("-", 1)[-1]: url for url in uploaded}
        media = str(tmp / "ls-data" / "media")
        yield Images(ls.url, ls.token, [by_name[f.name] for f in files], media)


def alone(images: Images, max_side: int | None, media: str | None = None) -> dict[str, float]:
    """Milliseconds per image to fetch and decode every image in one thread, with nothing else
    running (the worker's fetcher and decoder, timed by the worker's stage metrics); with
    ``media``, uploads are read from that folder."""
    from prometheus_client import REGISTRY
    from zerolabel.io.fetch import Fetcher, FetchPolicy
    from zerolabel.io.images import ImageLimits
    from zerolabel.io.ls_folders import LabelStudioFolders

    def spent(stage: str) -> float:
        labels = {"stage": stage}
        return REGISTRY.get_sample_value("zerolabel_worker_stage_seconds_sum", labels) or 0.0

    folders = LabelStudioFolders(media=media)
    fetcher = Fetcher(FetchPolicy(images.ls_url, images.token, ls_folders=folders))
    limits = ImageLimits()
    fetcher.fetch(images.urls[0], limits, max_side=max_side)  # warm-up: connection, token
    before = {stage: spent(stage) for stage in ("fetch", "decode")}
    for url in images.urls:
        fetcher.fetch(url, limits, max_side=max_side)
    fetcher.close()
    return {
        stage: 1000 * (spent(stage) - before[stage]) / len(images.urls)
        for stage in ("fetch", "decode")
    }


@contextlib.contextmanager
def label_studio_stand_in(folder: Path) -> Iterator[str]:
    """Serves ``folder`` under /data/upload/1/ to requests carrying the token."""
    from http.server import ThreadingHTTPServer

    class Handler(ReplyHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            name = self.path.split("?")[0].removeprefix("/data/upload/1/")
            path = folder / name
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self.send_error(401)
            elif "/" in name or not path.is_file():
                self.send_error(404)
            else:
                self._send(200, path.read_bytes(), "image/jpeg")

    with threaded_servers() as serve:
        server = serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def through_queue(
    args: argparse.Namespace,
    env: dict[str, str],
    images: Images,
    workers: int,
    tmp: Path,
    media: str | None = None,
) -> Iterator[Callable[[int], Row]]:
    """backend -> Redis -> ``workers`` worker processes, started and warmed up; yields: round
    index -> its row (one /predict for all the round's images). With ``media``, the workers
    read uploads from Label Studio's media folder."""
    folder = tmp / f"redis-{workers}-{'media' if media else 'http'}"
    folder.mkdir()
    with redis_server(folder) as (redis_url, _):
        ports = [free_port() for _ in range(workers)]
        common = {
            **env,
            **({"ZEROLABEL_LABEL_STUDIO_MEDIA": media} if media else {}),
            "REDIS_URL": redis_url,
            "LABEL_STUDIO_URL": images.ls_url,
            "LABEL_STUDIO_API_KEY": images.token,
            "ZEROLABEL_WAIT_TIMEOUT_S": str(args.timeout_s),
            "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
        }
        processes = [
            start_worker({**common, "ZEROLABEL_METRICS_PORT": str(port)}, folder / f"w{i}.log")
            for i, port in enumerate(ports)
        ]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        backend = start_backend(common, port)
        try:
            wait_for_workers(redis_url, workers, timeout_s=120)
            wait_for(lambda: _health(url), 60, "backend")
            spare = images.urls[args.repeat * args.images :]
            for i in range(workers):  # warm-up: each worker loads its model
                _predict(url, [spare[i]], 100_000 + i, args.timeout_s)
            rounds = images.rounds(args.repeat, args.images)

            def run(index: int) -> Row:
                urls = rounds[index]
                before = _scrape(ports)
                start = time.perf_counter()
                answered = _predict(url, urls, 1 + index * len(urls), args.timeout_s)
                seconds = time.perf_counter() - start
                if answered != len(urls):
                    raise SystemExit(
                        f"only {answered} of {len(urls)} tasks answered: raise --timeout-s"
                    )
                return _queue_row(workers, images, media, urls, seconds, before, _scrape(ports))

            yield run
        finally:
            stop(backend)
            for process in processes:
                stop(process)


def _queue_row(
    workers: int,
    images: Images,
    media: str | None,
    urls: list[str],
    seconds: float,
    before: dict[str, float],
    after: dict[str, float],
) -> Row:
    gained = {k: v - before.get(k, 0.0) for k, v in after.items()}
    stages = {k.removeprefix("stage:"): v for k, v in gained.items() if k.startswith("stage:")}
    runs = gained.get("batch_size_count", 0.0)
    sizes = f"{gained.get('batch_size_sum', 0.0) / runs:.1f} mean" if runs else ""
    label = f"backend → Redis → {workers} worker{'s' if workers > 1 else ''}"
    if images.media:
        label += ", reading Label Studio's media folder" if media else ", downloading"
    return Row(label, len(urls), seconds, stages, sizes)


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
    parser.add_argument("--repeat", type=int, default=3, help="rounds per path (median shown)")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument(
        "--label-studio", action="store_true", help="images from a real Label Studio"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as started:
        tmp = Path(tmp_name)
        files = make_images(tmp / "images", args.images * args.repeat + max(args.workers))
        env = discovery_env(args, random_checkpoint(tmp / "vits16-random.pth"))
        rounds = [files[r * args.images : (r + 1) * args.images] for r in range(args.repeat)]
        images = started.enter_context(image_source(args, files, tmp))
        paths = [started.enter_context(in_process(args, env, rounds, files[-1]))]
        for count in args.workers:
            for media in (None, images.media) if images.media else (None,):
                paths.append(
                    started.enter_context(through_queue(args, env, images, count, tmp, media))
                )
        runs: list[list[Row]] = [[] for _ in paths]
        for index in range(args.repeat):  # each round runs every path in turn
            for path, done in zip(paths, runs, strict=True):
                done.append(path(index))
        alone_rows = [("downloaded", alone(images, args.max_side))]  # every image once
        if images.media:
            read = alone(images, args.max_side, images.media)
            alone_rows.append(("read from Label Studio's media folder", read))

    server = "Label Studio 1.23" if args.label_studio else "the stand-in Label Studio"
    rows = [median(done) for done in runs]
    ratios = [None, *(median_ratio(done, runs[0]) for done in runs[1:])]
    print(
        f"\n### Queue throughput: {args.method}, ViT-S/16 (random weights), {args.max_side} px, "
        f"batch {args.batch}, {args.device} {args.precision}, {os.cpu_count()} CPU cores, "
        f"images from {server}, median of {args.repeat} rounds of {args.images} images\n"
    )
    print(
        "| path | images/s | vs in-process | ms/image | "
        + " | ".join(f"{s} ms" for s in STAGES)
        + " | outside the model ms | batch size |"
    )
    print("|---|---|---|---|" + "---|" * len(STAGES) + "---|---|")
    for row, ratio in zip(rows, ratios, strict=True):
        print(row.cells(ratio))
    for row, done in zip(rows[1:], runs[1:], strict=True):
        extra = sorted(
            1000 * (r.seconds / r.images - b.seconds / b.images)
            for r, b in zip(done, runs[0], strict=True)
        )[len(done) // 2]
        print(f"\nWall-clock time per image beyond in-process, {row.name}: {extra:.1f} ms.")
    print(f"\n### Fetching and decoding alone, one thread, {len(files)} images from {server}\n")
    print("| images | fetch ms | decode ms | fetch + decode ms |\n|---|---|---|---|")
    for name, single in alone_rows:
        print(
            f"| {name} | {single['fetch']:.1f} | {single['decode']:.1f} "
            f"| {single['fetch'] + single['decode']:.1f} |"
        )


if __name__ == "__main__":
    main()
