"""Click-to-object latency through the backend, a real redis-server and one worker process.

Label Studio's interactive requests (a smart keypoint's ``params.context``, as Label Studio 1.23
sends it) are replayed against the backend app on the example photos, 480 px (MaskCut's size),
ViT-S/16 with seeded random weights (latency does not depend on their values), one worker on
this machine's CPU. Per photo: the first click (one forward pass, the image never seen), then
further clicks (positive and background in turn) that reuse the worker's cached features; with
and without pixel refinement; and again while a pre-labeling run of queued jobs keeps the
worker busy, to show a click waits at most one batch step. Prints markdown tables (p50 and
p95 in ms).

    python bench/bench_interactive.py               # a few minutes on 2 cores
    python bench/bench_interactive.py --photos 4 --clicks 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "examples" / "voc2007" / "JPEGImages").glob("*.jpg"))
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="object"/></BrushLabels>
  <RectangleLabels name="label" toName="image"><Label value="object"/></RectangleLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="object" smart="true"/>
  </KeyPointLabels>
</View>"""
CLICKS = [(50.0, 50.0, True), (55.0, 45.0, True), (40.0, 40.0, False), (60.0, 60.0, True)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keypoint(x: float, y: float, positive: bool, hw: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": f"k{x}-{y}",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": hw[1],
        "original_height": hw[0],
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["object"]},
        "is_positive": positive,
    }


def _percentiles(times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):.0f} | {p95:.0f} | {len(ms)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--clicks", type=int, default=len(CLICKS), help="further clicks per photo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--busy-jobs", type=int, default=60)
    args = parser.parse_args()

    import logging

    import torch
    from PIL import Image
    from zerolabel.queue.service import PredictionService
    from zerolabel.settings import BackendSettings
    from zerolabel.vit.backbone import load_backbone
    from zerolabel_backend.app import create_app

    logging.disable(logging.WARNING)  # the busy run's late tasks are expected
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        checkpoint = tmp / "vits16.pth"
        model = load_backbone("dino_vits16", device="cpu", random_weights=True).model
        torch.save(model.state_dict(), checkpoint)
        photos = tmp / "photos"
        photos.mkdir()
        names = []
        for index in range(max(args.photos, 1) + args.busy_jobs):
            source = PHOTOS[index % len(PHOTOS)]
            name = f"{index:03d}-{source.name}"
            shutil.copy(source, photos / name)
            names.append(name)
        port = _free_port()
        redis = subprocess.Popen(
            [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "ZEROLABEL_CHECKPOINT": str(checkpoint),
            "ZEROLABEL_OFFLINE": "1",
            "ZEROLABEL_DEVICE": args.device,
            "ZEROLABEL_METHOD": "maskcut",
            "ZEROLABEL_LOCAL_ROOTS": str(photos),
            "ZEROLABEL_WAIT_TIMEOUT_S": "60",
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "zerolabel.cli.main", "worker"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            settings = BackendSettings.from_env(env)
            client = create_app(PredictionService(settings), settings).test_client()
            projects = {"refined": "1.1", "patch grid": "2.1"}
            for name, project in projects.items():
                extra = {"refine": False} if name == "patch grid" else {}
                body = {"project": project, "schema": CONFIG, "extra_params": extra}
                assert client.post("/setup", json=body).status_code == 200

            def ask(task: int, name: str, clicks: list[Any], project: str) -> float:
                hw = Image.open(photos / name).size[::-1]
                regions = [_keypoint(x, y, positive, hw) for x, y, positive in clicks]
                body = {
                    "tasks": [{"id": task, "data": {"image": str(photos / name)}}],
                    "project": project,
                    "label_config": CONFIG,
                    "params": {"context": {"result": regions}},
                }
                start = time.perf_counter()
                reply = client.post("/predict", json=body)
                spent = time.perf_counter() - start
                assert reply.status_code == 200, reply.data
                if not reply.get_json()["results"][0]:
                    print("no object:", json.dumps(reply.get_json()["skipped"]), file=sys.stderr)
                return spent

            ask(0, names[0], [CLICKS[0]], projects["refined"])  # the worker loads its model
            first: list[float] = []
            further: dict[str, list[float]] = {name: [] for name in projects}
            for task, name in enumerate(names[1 : args.photos + 1], start=1):
                first.append(ask(task, name, [CLICKS[0]], projects["refined"]))
                for kind, project in projects.items():
                    clicks = (CLICKS * args.clicks)[: args.clicks]
                    for count in range(1, len(clicks) + 1):  # as Label Studio: every click so far
                        further[kind].append(ask(task, name, clicks[:count], project))
            step = time.perf_counter()  # one pre-labeling job of one image: a batch step
            one = {
                "tasks": [{"id": 999, "data": {"image": str(photos / names[-1])}}],
                "project": projects["refined"],
                "label_config": CONFIG,
                "params": {},
            }
            assert client.post("/predict", json=one).get_json()["results"][0]
            step_s = time.perf_counter() - step
            busy: list[float] = []
            plain = {
                "tasks": [
                    {"id": 1000 + i, "data": {"image": str(photos / name)}}
                    for i, name in enumerate(names[args.photos + 1 :])
                ],
                "project": projects["refined"],
                "label_config": CONFIG,
                "params": {},
            }
            quick = BackendSettings.from_env({**env, "ZEROLABEL_WAIT_TIMEOUT_S": "0"})
            create_app(PredictionService(quick), quick).test_client().post("/predict", json=plain)
            time.sleep(1.0)
            for task, name in enumerate(names[1 : args.photos + 1], start=1):
                busy.append(ask(task, name, CLICKS[:2], projects["refined"]))
        finally:
            worker.kill()  # the busy run's jobs are not worth waiting for
            worker.wait(30)
            redis.terminate()
            redis.wait(30)
    print(
        f"\n### Click to an object, ViT-S/16 ({args.device}), 480 px, backend -> Redis -> one "
        "worker: `python bench/bench_interactive.py`\n"
    )
    print("| click | p50 ms | p95 ms | clicks |")
    print("|---|---|---|---|")
    print(f"| first on an image (forward pass, refined) | {_percentiles(first)} |")
    print(f"| further, refined to pixels | {_percentiles(further['refined'])} |")
    print(f"| further, patch-grid mask | {_percentiles(further['patch grid'])} |")
    print(f"| further, while a pre-labeling run keeps the worker busy | {_percentiles(busy)} |")
    step_ms = 1000 * step_s
    print(f"| (one batch step: a pre-labeling job of one image, MaskCut) | {step_ms:.0f} | | 1 |")


if __name__ == "__main__":
    main()
