"""Adaptation benchmark: what a ``zerolabel adapt`` step costs, and what a short run changes.

Two markdown tables:

* ``--only step``: images per second and memory of one training step (DINO's multi-crop: 2
  global crops of 224 px and ``--local-crops`` local crops of 96 px per image) for each
  backbone of ``--archs`` (seeded random weights: speed and memory do not depend on their
  values), batch size of ``--batches``, and gradient checkpointing off and on. Each row runs in a
  fresh process through :class:`zerolabel.adapt.state.TrainingState`, the state the training
  loop steps: one warm-up step, then ``--repeats`` timed steps on views drawn beforehand (the
  loop draws them in threads while the previous step trains; their single-thread cost is the
  ``views s`` column). Memory: the step's need as :mod:`zerolabel.adapt.memory` estimates it
  before training (what ``adapt`` checks against the free memory), the growth measured during
  the steps (peak minus the memory in use before the first step: resident set size on the CPU,
  CUDA's allocated memory on a GPU), the process's peak RSS, and CUDA's max allocated memory
  ("unmeasured" on the CPU).
* ``--only domain``: a synthetic domain built here: scenes of one textured object of one of
  ``--classes`` kinds (shape and texture; colours, size, place and background drawn at random)
  on a textured background, boxes and kinds known, and a short H.264 video (PyAV) in which
  objects of three kinds drift across such a background. ``zerolabel adapt``'s training
  (:func:`zerolabel.adapt.training.adapt`) runs on the unlabeled training scenes and the
  video's clips (DoRA's tracked-object masking); before and after, on held-out scenes: view
  retrieval (how often one of the two global views training draws of a scene finds the other
  among all scenes' views: what self-distillation trains for), k-NN accuracy by kind on the
  [CLS] features of the objects' crops and of the whole scenes (leave-one-out, DINO's weighted
  vote), LOST's CorLoc through the project's pipeline, and the mean cosine similarity of two
  scenes' [CLS] features (near 1: collapsed). "Before" is ``--checkpoint`` or seeded random
  weights of ``--arch`` saved as a checkpoint; both load by checkpoint
  (:func:`zerolabel.vit.backbone.load_backbone`), the adapted ones from the file ``adapt``
  wrote. The loss curve (means over tenths of the run) is printed under the table.

The default domain is small so that a run takes minutes on 2 CPU cores: 64 px scenes and a
ViT-Ti (``vit_tiny_patch16_224``) cut to 4 blocks with 8 px patches (an 8 x 8 grid, as LOST
sees a 128 px image at patch 16), crops of 64 and 32 px, a head of 1024 outputs, and a
constant teacher temperature (``--teacher-temp``; DINO warms it up from 0.04 to 0.07 over 30 %
of the run, which keeps a short run's loss flat whatever the features do). Give ``--arch
dino_vits16 --checkpoint dino.pth --side 224 --patch 0 --depth 0 --adapt-global-size 224
--adapt-local-size 96`` for a team's own starting weights at DINO's sizes.

Usage::

    python bench/bench_adapt.py              # both tables, CPU: about 25 minutes on 2 cores
    python bench/bench_adapt.py --only step --device cuda --batches 32 64 --precision bf16
    python bench/bench_adapt.py --only domain --arch dino_vits16 --checkpoint dino.pth \\
        --side 224 --patch 0 --depth 0 --adapt-global-size 224 --adapt-local-size 96
    python bench/bench_adapt.py --only step --archs dino_vits16 --batches 2 --repeats 1  # smoke
    python bench/bench_adapt.py --only domain --steps 2 --batch 2 --train-images 8 \\
        --eval-images 8                                                           # smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerolabel.adapt.config import AdaptConfig  # noqa: E402
from zerolabel.adapt.crops import CropSettings, image_views  # noqa: E402
from zerolabel.adapt.data import collect  # noqa: E402
from zerolabel.adapt.ddp import Distributed  # noqa: E402
from zerolabel.adapt.memory import check, free_bytes, step_memory  # noqa: E402
from zerolabel.adapt.saving import loss_curve  # noqa: E402
from zerolabel.adapt.state import TrainingState  # noqa: E402
from zerolabel.adapt.training import adapt  # noqa: E402
from zerolabel.contract import Box, DiscoverySpec  # noqa: E402
from zerolabel.errors import ConfigError  # noqa: E402
from zerolabel.evaluation.ground_truth import GtImage  # noqa: E402
from zerolabel.evaluation.metrics import corloc  # noqa: E402
from zerolabel.io.images import ImageLimits, load_file  # noqa: E402
from zerolabel.pipeline import Discoverer  # noqa: E402
from zerolabel.vit.backbone import Backbone, load_backbone, pick_device  # noqa: E402
from zerolabel.vit.features import extract  # noqa: E402

MIB = 2**20
COMMAND = "python bench/bench_adapt.py"
SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond")
TEXTURES = ("stripes", "checks", "dots", "rings", "solid", "waves")
KNN_TEMPERATURE = 0.07  # DINO's weighted k-NN vote


# --- the synthetic domain -----------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One synthetic image: its file, its object's box (pixels) and class id, and the file of
    the object's crop."""

    path: Path
    box: Box
    label: int
    crop: Path


def _smooth_noise(rng: np.random.Generator, side: int, cells: int) -> np.ndarray:
    """[side, side] values in [0, 1]: a random ``cells x cells`` grid, upsampled bilinearly."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(grid).resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(big, dtype=np.float32) / 255.0


def _shape_mask(kind: str, side: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """[side, side] bool: ``kind`` filling the box (top, left, height, width)."""
    top, left, h, w = box
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    v = (ys - top) / h * 2 - 1  # -1..1 inside the box
    u = (xs - left) / w * 2 - 1
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    radius = u * u + v * v
    masks = {
        "disc": radius <= 1,
        "square": inside,
        "triangle": inside & (np.abs(u) <= (v + 1) / 2),
        "cross": inside & ((np.abs(u) <= 0.33) | (np.abs(v) <= 0.33)),
        "ring": (radius <= 1) & (radius >= 0.4),
        "diamond": np.abs(u) + np.abs(v) <= 1,
    }
    return masks[kind]


def _texture(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """[side, side] pattern in [0, 1] at a random scale and phase."""
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    period = rng.uniform(6, 12)
    angle = rng.uniform(0, math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    across = -xs * math.sin(angle) + ys * math.cos(angle)
    phase = rng.uniform(0, period)
    patterns = {
        "stripes": ((along + phase) % period) < period / 2,
        "checks": (((along + phase) // (period / 2)) + (across // (period / 2))) % 2 == 0,
        "dots": (((along + phase) % period - period / 2) ** 2 + (across % period - period / 2) ** 2)
        < (period / 3.5) ** 2,
        "rings": (np.hypot(xs - side * rng.random(), ys - side * rng.random()) % period)
        < period / 2,
        "solid": np.ones((side, side), dtype=bool),
        "waves": np.sin((along + 3 * np.sin(across / period)) * 2 * math.pi / period) > 0,
    }
    return patterns[kind].astype(np.float32)


def _colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def make_scene(rng: np.random.Generator, side: int, label: int) -> tuple[np.ndarray, Box]:
    """[side, side, 3] uint8 scene of one object of class ``label`` and its box.

    The class is the object's shape and texture (shape ``label``, texture ``label``); its two
    colours, size, place, the texture's scale and angle, and the background (smooth noise of
    another random colour with faint stripes) are drawn at random, so no class has a colour.
    """
    dark_object = rng.random() < 0.5
    background = _colour(rng, 0.45, 1.0) if dark_object else _colour(rng, 0.0, 0.55)
    noise = _smooth_noise(rng, side, int(rng.integers(3, 8)))[..., None]
    faint = _texture("stripes", side, rng)[..., None]
    pixels = background * (0.7 + 0.3 * noise) * (0.9 + 0.1 * faint)
    h = int(rng.integers(round(side * 0.35), round(side * 0.6) + 1))
    w = int(np.clip(round(h * rng.uniform(0.8, 1.25)), side * 0.3, side * 0.65))
    top, left = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    mask = _shape_mask(SHAPES[label], side, (top, left, h, w))
    first = _colour(rng, 0.0, 0.45) if dark_object else _colour(rng, 0.55, 1.0)
    second = first * rng.uniform(0.3, 0.7) if dark_object else first * rng.uniform(0.6, 0.8)
    pattern = _texture(TEXTURES[label], side, rng)[..., None]
    colour = first * pattern + second * (1 - pattern)
    pixels = np.where(mask[..., None], colour, pixels)
    ys, xs = np.nonzero(mask)
    box = Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8), box


def object_crop(pixels: np.ndarray, box: Box, side: int) -> Image.Image:
    """The object's box with a margin of 10 % of its size on each side, resized to ``side``."""
    height, width = pixels.shape[:2]
    margin_x, margin_y = 0.1 * (box.x1 - box.x0), 0.1 * (box.y1 - box.y0)
    left, top = max(0, round(box.x0 - margin_x)), max(0, round(box.y0 - margin_y))
    right, bottom = min(width, round(box.x1 + margin_x)), min(height, round(box.y1 + margin_y))
    crop = Image.fromarray(pixels[top:bottom, left:right])
    return crop.resize((side, side), Image.Resampling.BICUBIC)


def write_scenes(folder: Path, count: int, classes: int, side: int, seed: int) -> list[Scene]:
    """``count`` scenes (classes in turn) saved as PNG files in ``folder``, and their objects'
    crops in the folder beside it named ``<folder>-crops``."""
    crops = folder.with_name(folder.name + "-crops")
    folder.mkdir(parents=True, exist_ok=True)
    crops.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    scenes = []
    for index in range(count):
        label = index % classes
        pixels, box = make_scene(rng, side, label)
        path = folder / f"scene_{index:04d}.png"
        crop = crops / path.name
        Image.fromarray(pixels).save(path)
        object_crop(pixels, box, side).save(crop)
        scenes.append(Scene(path, box, label, crop))
    return scenes


def _object_layer(
    rng: np.random.Generator, side: int, label: int, dark: bool, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` object of class ``label``: its pixels and its mask."""
    mask = _shape_mask(SHAPES[label], size, (0, 0, size, size))
    first = _colour(rng, 0.0, 0.45) if dark else _colour(rng, 0.55, 1.0)
    second = first * rng.uniform(0.3, 0.7) if dark else first * rng.uniform(0.6, 0.8)
    pattern = _texture(TEXTURES[label], size, rng)[..., None]
    return first * pattern + second * (1 - pattern), mask


def write_video(path: Path, frames: int, classes: int, side: int, seed: int) -> Path:
    """An H.264 video of ``frames`` frames (10 per second) in which one object of each of the
    first ``min(classes, 3)`` kinds drifts across a still background of the scenes' kind,
    bouncing off the edges (later objects pass in front of earlier ones)."""
    import av  # zerolabel's adapt dependency

    rng = np.random.default_rng(seed)
    dark = rng.random() < 0.5
    background = _colour(rng, 0.45, 1.0) if dark else _colour(rng, 0.0, 0.55)
    noise = _smooth_noise(rng, side, int(rng.integers(3, 8)))[..., None]
    faint = _texture("stripes", side, rng)[..., None]
    still = background * (0.7 + 0.3 * noise) * (0.9 + 0.1 * faint)
    movers = []
    for label in range(min(classes, 3)):
        size = int(rng.integers(round(side * 0.3), round(side * 0.45) + 1))
        pixels, mask = _object_layer(rng, side, label, dark, size)
        place = rng.uniform(0, side - size, size=2)
        speed = rng.uniform(0.5, 1.5, size=2) * rng.choice([-1.0, 1.0], size=2) * side / 64
        movers.append((pixels, mask, size, place, speed))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "18"})
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = still.copy()
            for pixels, mask, size, place, speed in movers:
                top, left = (int(round(value)) for value in place)
                window = image[top : top + size, left : left + size]
                window[mask] = pixels[mask]
                place += speed
                for axis in (0, 1):  # bounce off the edges
                    if not 0 <= place[axis] <= side - size:
                        speed[axis] = -speed[axis]
                        place[axis] = np.clip(place[axis], 0, side - size)
            rgb = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    return path


# --- one training step --------------------------------------------------------------------


def _memory_now() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            found[line.split(":")[0]] = int(line.split()[1]) * 1024
    return found["VmRSS"], found["VmHWM"]


def _reset_peak_rss() -> bool:
    """Start VmHWM again from the current RSS (Linux: ``5`` into ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_row(options: dict[str, Any]) -> dict[str, Any]:
    """One row of the step table, measured in this (fresh) process."""
    device = pick_device(options["device"])
    steps = 1 + options["repeats"]
    config = AdaptConfig(
        backbone=options["arch"],
        random_weights=True,
        offline=True,
        steps=steps,
        batch_size=options["batch"],
        local_crops=options["local_crops"],
        global_size=options["global_size"],
        local_size=options["local_size"],
        out_dim=options["out_dim"],
        grad_checkpointing=options["checkpointing"],
        device=str(device),
        precision=options["precision"],
        checkpoint_seconds=None,
    )
    inputs = collect(
        [options["images"]],
        clip_frames=config.clip_frames,
        frame_step=config.frame_step,
        progress=False,
    )
    run = TrainingState.build(config, inputs, device, Distributed(), None, ImageLimits())
    items = config.batch_size
    need = step_memory(
        run.student,
        global_size=config.global_size,
        local_size=config.local_size,
        views=(2 * items, config.local_crops * items),
        out_dim=config.out_dim,
        device=device,
        autocast=run.autocast,
    )
    row: dict[str, Any] = {"estimate": need.total}
    try:
        check(need, free_bytes(device), items=items, checkpointing=config.grad_checkpointing)
    except ConfigError as exc:
        return {**row, "refused": str(exc)}
    start = time.perf_counter()
    plans = [run.prepare(step) for step in range(steps)]
    row["views_s"] = (time.perf_counter() - start) / steps
    gc.collect()
    rss_before, _ = _memory_now()
    row["peak_reset"] = _reset_peak_rss()
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    times, losses = [], []
    try:
        for step, plan in enumerate(plans):
            start = time.perf_counter()
            losses.append(run.train_step(step, plan))
            _sync(device)
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return {**row, "refused": "out of device memory"}
    _, peak = _memory_now()
    row.update(step_s=statistics.median(times[1:]), peak_rss=peak, loss=losses[-1])
    if device.type == "cuda":
        cuda_peak = torch.cuda.max_memory_allocated(device)
        row.update(cuda_peak=cuda_peak, measured=cuda_peak - cuda_before)
    else:
        row["measured"] = peak - rss_before
    return row


def bench_step(args: argparse.Namespace, folder: Path) -> None:
    write_scenes(folder, max(args.batches), args.classes, args.global_size, args.seed)
    device = pick_device(args.device)
    print(
        f"\n### One training step, {device}, 2 global {args.global_size} px + "
        f"{args.local_crops} local {args.local_size} px crops per image, head {args.out_dim} "
        f"outputs, {args.precision}: `{_command()}`\n"
    )
    print(
        "| backbone | batch | grad. checkpointing | step s | img/s | views s | estimated MiB "
        "| measured MiB | peak RSS MiB | CUDA max allocated MiB |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    context = multiprocessing.get_context("spawn")
    reset_failed = False
    for arch in args.archs:
        for batch in args.batches:
            for checkpointing in (False, True):
                options = {
                    "arch": arch,
                    "batch": batch,
                    "checkpointing": checkpointing,
                    "images": str(folder),
                    **{
                        key: getattr(args, key)
                        for key in (
                            "device",
                            "repeats",
                            "local_crops",
                            "global_size",
                            "local_size",
                            "out_dim",
                            "precision",
                        )
                    },
                }
                with context.Pool(1) as pool:  # a fresh process: its own peak memory
                    row = pool.apply(step_row, (options,))
                reset_failed |= not row.get("peak_reset", True)
                print(_step_line(arch, batch, checkpointing, row), flush=True)
    print(
        "\nestimated: `zerolabel.adapt.memory.step_memory(...).total`, what a step adds to the "
        "memory in use before it (activations kept for the backward pass, a checkpointed block "
        "recomputed, gradients, AdamW's moments and its step's temporary, logits); measured: "
        "the peak during the steps minus the memory in use before the first (RSS on the CPU, "
        "allocated memory on CUDA); step s: median of "
        f"{args.repeats} step(s) after a warm-up step; views s: drawing one step's views "
        "serially (the loop draws them in threads during the previous step); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads."
    )
    if reset_failed:
        print("(VmHWM could not be reset here: peak RSS includes the set-up before the steps.)")


def _step_line(arch: str, batch: int, checkpointing: bool, row: dict[str, Any]) -> str:
    lead = f"| {arch} | {batch} | {'on' if checkpointing else 'off'} "
    estimate = f"{row['estimate'] / MIB:.0f}"
    if "refused" in row:
        return f"{lead}| refused | - | - | {estimate} | - | - | - | ({row['refused']})"
    cuda = f"{row['cuda_peak'] / MIB:.0f}" if "cuda_peak" in row else "unmeasured"
    return (
        f"{lead}| {row['step_s']:.2f} | {batch / row['step_s']:.2f} | {row['views_s']:.2f} "
        f"| {estimate} | {row['measured'] / MIB:.0f} | {row['peak_rss'] / MIB:.0f} | {cuda} |"
    )


# --- before and after -----------------------------------------------------------------------


@dataclass(frozen=True)
class Quality:
    """What the features of one set of weights give on the held-out scenes."""

    views: float  # view retrieval (:func:`view_retrieval`)
    crop_knn: float  # leave-one-out k-NN accuracy on the [CLS] features of the objects' crops
    knn: float  # the same on whole scenes
    corloc: float  # LOST's CorLoc
    cosine: float  # mean cosine similarity of two scenes' [CLS] features (1: collapsed)


def evaluate(
    backbone: Backbone, arch: str, scenes: list[Scene], k: int, view_size: int, seed: int
) -> Quality:
    """View retrieval; k-NN accuracy on the [CLS] features of the objects' crops and of the
    scenes, and LOST's CorLoc on the scenes (the project's pipeline on crops and scenes)."""
    spec = DiscoverySpec(method="lost", backbone=arch, weights=backbone.weights_id, masks=False)
    discoverer = Discoverer(backbone, spec)
    features: dict[str, torch.Tensor] = {}
    discoverer.seen = lambda image, _frame, feat: features.__setitem__(
        image.source, feat.cls_output.float().cpu()
    )
    discoverer.run([load_file(scene.crop, ImageLimits()) for scene in scenes])
    images = [load_file(scene.path, ImageLimits()) for scene in scenes]
    regions = discoverer.run(images)
    predictions = {
        scene.path.stem: [(region.box, region.score) for region in found]
        for scene, found in zip(scenes, regions, strict=True)
    }
    truth = {
        scene.path.stem: GtImage(
            scene.path.name, image.original_hw, [scene.box], [SHAPES[scene.label]]
        )
        for scene, image in zip(scenes, images, strict=True)
    }
    found_rate, _ = corloc(predictions, truth)
    cls = torch.stack([features[str(scene.path)] for scene in scenes])
    crops = torch.stack([features[str(scene.crop)] for scene in scenes])
    labels = torch.tensor([scene.label for scene in scenes])
    return Quality(
        view_retrieval(backbone, scenes, view_size, seed),
        knn_accuracy(crops, labels, k),
        knn_accuracy(cls, labels, k),
        found_rate,
        mean_cosine(cls),
    )


def view_retrieval(backbone: Backbone, scenes: list[Scene], size: int, seed: int) -> float:
    """How often one of ``adapt``'s two global views of a held-out scene finds the other.

    Each scene gets the two global views training draws (crop of 40-100 % of the area, flip,
    colour jitter, grayscale, blur, solarization; :func:`zerolabel.adapt.crops.image_views`) at
    ``size`` px; the share of views whose most similar [CLS] feature among the other views of
    all scenes is the view of their own scene, both ways. It measures what self-distillation
    trains for, on scenes it never saw.
    """
    mean, std = backbone.mean_std
    settings = CropSettings(
        global_size=size,
        local_size=size,
        local_crops=0,
        global_scale=(0.4, 1.0),
        local_scale=(0.05, 0.4),
        clip_scale=(0.2, 1.0),
        mean=mean,
        std=std,
    )
    views = []
    for index, scene in enumerate(scenes):
        rgb = np.asarray(Image.open(scene.path).convert("RGB"), dtype=np.float32) / 255.0
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        views.append(image_views(torch.from_numpy(rgb).permute(2, 0, 1), generator, settings)[0])
    pairs = torch.stack(views)  # [scenes, 2, 3, size, size]
    first, second = (
        torch.cat(
            [
                torch.stack([f.cls_output for f in extract(backbone, chunk)]).cpu()
                for chunk in pairs[:, which].split(32)
            ]
        )
        for which in (0, 1)
    )
    similarity = F.normalize(first, dim=1) @ F.normalize(second, dim=1).T
    own = torch.arange(len(scenes))
    found = (similarity.argmax(dim=1) == own).float().mean() + (
        similarity.argmax(dim=0) == own
    ).float().mean()
    return float(found / 2)


def knn_accuracy(features: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Leave-one-out k-NN accuracy: cosine similarity, votes weighted by ``exp(sim / 0.07)``."""
    normed = torch.nn.functional.normalize(features, dim=1)
    similarity = normed @ normed.T
    similarity.fill_diagonal_(-math.inf)
    k = min(k, len(labels) - 1)
    top, index = similarity.topk(k, dim=1)
    votes = torch.zeros(len(labels), int(labels.max()) + 1)
    votes.scatter_add_(1, labels[index], (top / KNN_TEMPERATURE).exp())
    return float((votes.argmax(dim=1) == labels).float().mean())


def mean_cosine(features: torch.Tensor) -> float:
    """Mean cosine similarity over the pairs of different rows."""
    normed = torch.nn.functional.normalize(features, dim=1)
    similarity = normed @ normed.T
    count = len(features)
    return float((similarity.sum() - similarity.diagonal().sum()) / (count * (count - 1)))


def bench_domain(args: argparse.Namespace, folder: Path) -> None:
    device = pick_device(args.device)
    train = write_scenes(folder / "train", args.train_images, args.classes, args.side, args.seed)
    held_out = write_scenes(
        folder / "eval", args.eval_images, args.classes, args.side, args.seed + 1
    )
    overrides = {"depth": args.depth, "patch_size": args.patch}
    kwargs = {key: value for key, value in overrides.items() if value} or None
    base = args.checkpoint
    if base is None:
        torch.manual_seed(args.seed)
        model = load_backbone(
            args.arch, device="cpu", model_kwargs=kwargs, random_weights=True
        ).model
        base = str(folder / "base-random.pth")
        torch.save(model.state_dict(), base)
    config = AdaptConfig(
        backbone=args.arch,
        checkpoint=base,
        model_kwargs=kwargs,
        offline=True,
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        momentum=args.momentum,
        teacher_temp=args.teacher_temp,
        warmup_teacher_temp=args.teacher_temp,
        out_dim=args.adapt_out_dim,
        local_crops=args.adapt_local_crops,
        global_size=args.adapt_global_size,
        local_size=args.adapt_local_size,
        clip_frames=args.clip_frames,
        frame_step=args.frame_step,
        seed=args.seed,
        device=str(device),
        precision=args.precision,
        checkpoint_seconds=None,
    )
    measure = {"k": args.knn_k, "view_size": args.adapt_global_size, "seed": args.seed}
    before = evaluate(_loaded(args, base, device, kwargs), args.arch, held_out, **measure)
    sources = [folder / "train"]
    if args.video_frames:
        sources.append(
            write_video(
                folder / "moving.mp4", args.video_frames, args.classes, args.side, args.seed + 2
            )
        )
    inputs = collect(
        sources,
        clip_frames=config.clip_frames,
        frame_step=config.frame_step,
        progress=False,
    )
    result = adapt(config, inputs, folder / "run", progress=args.progress)
    assert result is not None
    train_s = float(json.loads(result.metadata.read_text())["train_seconds"])
    adapted = _loaded(args, str(result.weights), device, kwargs)
    after = evaluate(adapted, args.arch, held_out, **measure)
    weights = "--checkpoint" if args.checkpoint else "seeded random weights"
    depth = "".join(f", {name} {value}" for name, value in kwargs.items()) if kwargs else ""
    print(
        f"\n### Before and after `adapt` on a synthetic domain, {args.arch}{depth} from "
        f"{weights}, {args.steps} steps of {args.batch} scenes or clips, {device}: "
        f"`{_command()}`\n"
    )
    k = min(args.knn_k, len(held_out) - 1)
    print(
        f"| weights | view retrieval | k-NN (k={k}), object crops | k-NN, whole scenes "
        "| LOST CorLoc | mean [CLS] cosine |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, quality in (("before", before), (f"after {args.steps} steps", after)):
        print(
            f"| {name} | {quality.views:.1%} | {quality.crop_knn:.1%} | {quality.knn:.1%} "
            f"| {quality.corloc:.1%} | {quality.cosine:.2f} |"
        )
    curve = ", ".join(
        f"{point['step']}: {point['loss']:.2f}" for point in loss_curve(result.losses, 10)
    )
    clips = len(inputs) - len(inputs.images)
    video = (
        f" and {clips} clips ({config.clip_frames} frames {config.frame_step} apart) of a "
        f"video of {args.video_frames} frames, {min(args.classes, 3)} kinds moving"
        if clips
        else ""
    )
    print(
        f"\nTraining on {len(train)} unlabeled scenes{video}; evaluation on {len(held_out)} "
        f"held-out scenes ({args.classes} kinds, {args.side} px; chance {1 / args.classes:.0%}, "
        f"view retrieval by chance {1 / len(held_out):.1%}). Training: {train_s:.0f} s "
        f"({train_s / args.steps:.2f} s per step). Loss curve (step: mean loss over the "
        f"tenth of the run that ends there): {curve}. Config: lr {config.lr} (peak "
        f"{config.peak_lr:.2g}), momentum "
        f"{config.momentum}, teacher temperature {config.teacher_temp}, head {config.out_dim} "
        f"outputs, 2 x {config.global_size} px + {config.local_crops} x {config.local_size} px "
        "crops."
    )


def _loaded(
    args: argparse.Namespace, checkpoint: str, device: torch.device, kwargs: dict[str, Any] | None
) -> Backbone:
    return load_backbone(args.arch, checkpoint=checkpoint, device=str(device), model_kwargs=kwargs)


def _command() -> str:
    """The command that prints the tables, as it was typed."""
    return " ".join([COMMAND, *sys.argv[1:]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("step", "domain"), default=None)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto ...")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=int, default=4, choices=range(2, len(SHAPES) + 1))
    step = parser.add_argument_group("step table")
    step.add_argument("--archs", nargs="+", default=["dino_vits16", "dino_vitb16"])
    step.add_argument("--batches", nargs="+", type=int, default=[8, 16])
    step.add_argument("--repeats", type=int, default=2, help="timed steps after the warm-up")
    step.add_argument("--local-crops", type=int, default=8)
    step.add_argument("--global-size", type=int, default=224)
    step.add_argument("--local-size", type=int, default=96)
    step.add_argument("--out-dim", type=int, default=65536)
    domain = parser.add_argument_group("before/after table")
    domain.add_argument("--side", type=int, default=64, help="of the scenes and video, px")
    domain.add_argument("--arch", default="vit_tiny_patch16_224")
    domain.add_argument("--depth", type=int, default=4, help="blocks (0: the arch's)")
    domain.add_argument("--patch", type=int, default=8, help="patch size (0: the arch's)")
    domain.add_argument("--checkpoint", default=None, help="base weights (default: random)")
    domain.add_argument("--steps", type=int, default=1200)
    domain.add_argument("--batch", type=int, default=16)
    domain.add_argument("--lr", type=float, default=0.005, help="for 256 images (DINO: 0.0005)")
    domain.add_argument("--momentum", type=float, default=0.996, help="teacher EMA")
    domain.add_argument("--teacher-temp", type=float, default=0.02, help="(0.04 -> 0.07)")
    domain.add_argument("--adapt-local-crops", type=int, default=4, help="(8)")
    domain.add_argument("--adapt-global-size", type=int, default=64, help="(224)")
    domain.add_argument("--adapt-local-size", type=int, default=32, help="(96)")
    domain.add_argument("--adapt-out-dim", type=int, default=1024, help="(65536)")
    domain.add_argument("--train-images", type=int, default=256)
    domain.add_argument("--video-frames", type=int, default=80, help="0: no video")
    domain.add_argument("--clip-frames", type=int, default=4, help="(DoRA: 8)")
    domain.add_argument("--frame-step", type=int, default=6, help="(DoRA: 60)")
    domain.add_argument("--eval-images", type=int, default=200)
    domain.add_argument("--knn-k", type=int, default=20)
    domain.add_argument("--progress", action="store_true", help="show the training's progress")
    args = parser.parse_args(argv)
    for name in ("repeats", "steps", "batch", "train_images", "eval_images", "knn_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.eval_images < 2:
        parser.error("--eval-images must be at least 2 (leave-one-out k-NN)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "step"):
            bench_step(args, Path(tmp) / "step")
        if args.only in (None, "domain"):
            bench_domain(args, Path(tmp) / "domain")


if __name__ == "__main__":
    main()
