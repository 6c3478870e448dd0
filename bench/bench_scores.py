"""Score benchmark: do task scores spread and rank the tasks, for every method?

Every method runs on the example photos that have ground truth (``examples/voc2007`` and
``examples/coco8``). Per method: the tasks, those where nothing was found, the distinct task
scores (the mean region score Label Studio sorts by) with their min / median / max, and the
Spearman correlations of task score with task quality (matched-IoU F1) and of region score with
IoU (:mod:`zerolabel.evaluation.rank`); then the same for the lowest region score of each task,
for comparison.

No pretrained weights are used: the ViT-S/16 has seeded random weights, the ``rps`` direction is
fitted on the same photos, and the detector (``cad``) is a Faster R-CNN trained a few CPU steps on
LOST's pseudo-boxes of the photos (no ground truth), served at a threshold set to a quantile
of its raw confidences, so that its weak detections crowd there as a briefly trained detector's
do at 0.5. The figures say whether scores spread, not how good the methods are. Prints a
markdown table. Usage::

    python bench/bench_scores.py                                 # every method (minutes, CPU)
    python bench/bench_scores.py --methods lost cad --max-side 224  # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from zerolabel import methods
from zerolabel.contract import DiscoveryResult, DiscoverySpec, Region
from zerolabel.evaluation.ground_truth import GroundTruth, read_ground_truth, read_voc
from zerolabel.evaluation.metrics import Predictions, format_rho
from zerolabel.evaluation.rank import score_iou_spearman, spearman, task_quality
from zerolabel.fitted import Fitted, load_fitted, save_fitted
from zerolabel.io.images import ImageLimits, LoadedImage, load_file
from zerolabel.pipeline import DetectorRunner, Discoverer
from zerolabel.settings import WorkerSettings
from zerolabel.vit.backbone import Backbone, load_backbone

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LIMITS = ImageLimits()


def example_photos() -> tuple[dict[str, Path], GroundTruth]:
    """The example photos with ground truth (by file stem) and that ground truth."""
    gt = {
        **read_voc(EXAMPLES / "voc2007"),
        **read_ground_truth(EXAMPLES / "coco8" / "labels", "yolo", EXAMPLES / "coco8" / "images"),
    }
    files = [
        *(EXAMPLES / "voc2007" / "JPEGImages").glob("*"),
        *(EXAMPLES / "coco8" / "images").glob("*"),
    ]
    photos = {p.stem: p for p in sorted(files) if p.stem in gt}
    return photos, {stem: gt[stem] for stem in photos}


def feature_regions(
    backbone: Backbone,
    method: str,
    photos: dict[str, Path],
    max_side: int | None,
    fitted: Path | None,
) -> dict[str, list[Region]]:
    """Regions of a feature method on every photo (the method's defaults, refinement included)."""
    info = methods.get(method)
    spec = DiscoverySpec(
        method=method, max_side=max_side, fitted=fitted.name if info.fitted and fitted else None
    )
    loaded: Fitted | None = None
    if spec.fitted is not None and fitted is not None and info.fitted is not None:
        loaded = load_fitted(fitted, kind=info.fitted, backbone=spec.backbone, weights=spec.weights)
    runner = Discoverer(backbone, spec, loaded)
    images = [load_file(p, LIMITS, max_side=runner.max_side) for p in photos.values()]
    return dict(zip(photos, runner.run(images), strict=True))


def fit_rps(
    backbone: Backbone, photos: dict[str, Path], max_side: int | None, folder: Path
) -> Path:
    """An rps direction fitted on the photos themselves (what ``zerolabel rps-fit`` computes)."""
    from zerolabel.loop.fit_rps import fit_rps as fit
    from zerolabel.loop.fitting import FitSample

    side = max_side if max_side is not None else methods.get("rps").default_max_side
    samples = [
        FitSample(p.name, lambda p=p: load_file(p, LIMITS, max_side=side)) for p in photos.values()
    ]
    fitted, _ = fit(samples, backbone, backbone_name="dino_vits16", weights="hub", max_side=side)
    return save_fitted(fitted, folder)


def detector_regions(
    pseudo: dict[str, list[Region]],
    photos: dict[str, Path],
    folder: Path,
    iterations: int,
    quantile: float,
) -> tuple[dict[str, list[Region]], float]:
    """Train a small detector on ``pseudo`` labels and serve it like the ``cad`` method.

    Returns:
        Its regions per photo and the threshold it was served with (the ``quantile`` of its raw
        confidences over all photos).
    """
    from zerolabel.cad import CadConfig, detect, load_detector, train

    images = [load_file(p, LIMITS) for p in photos.values()]
    coco = _coco(pseudo, photos, images)
    (folder / "pseudo.json").write_text(json.dumps(coco))
    config = CadConfig(
        masks=False,
        min_size=160,
        max_size=224,
        iterations=iterations,
        warmup_iterations=max(1, iterations // 5),
        checkpoint_seconds=None,
        rois_per_image=128,
        proposals=300,
    )
    checkpoint = train(config, folder / "pseudo.json", EXAMPLES, folder / "cad", progress=False)
    model, _ = load_detector(checkpoint, "cpu")
    raw = [s for image in images for _, s, _ in detect(model, image, score_threshold=0.0)]
    threshold = round(float(np.quantile(raw, quantile)), 4) if raw else 0.5
    settings = WorkerSettings.from_env({"ZEROLABEL_CAD_CHECKPOINT": str(checkpoint)})
    spec = settings.spec(method="cad", params={"score_threshold": threshold})
    runner = DetectorRunner(model, spec)
    return dict(zip(photos, runner.run(images), strict=True)), threshold


def _coco(
    regions: dict[str, list[Region]], photos: dict[str, Path], images: Sequence[LoadedImage]
) -> dict[str, object]:
    """Boxes of ``regions`` as a one-category COCO file; file names relative to examples/."""
    coco_images, annotations = [], []
    for image_id, (stem, image) in enumerate(zip(photos, images, strict=True), 1):
        h, w = image.original_hw
        name = str(photos[stem].relative_to(EXAMPLES))
        coco_images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        for region in regions[stem]:
            b = region.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "bbox": [b.x0, b.y0, b.width, b.height],
                    "area": b.width * b.height,
                    "iscrowd": 0,
                }
            )
    return {
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "object"}],
    }


HEADER = (
    "| method | tasks | nothing found | distinct task scores | task score min / median / max "
    "| task rho | region rho | lowest region: distinct | lowest region: min / max "
    "| lowest region: task rho |"
)


def row(method: str, regions: dict[str, list[Region]], gt: GroundTruth) -> str:
    """One markdown row of figures for ``method``'s regions on the ground-truth photos."""
    preds: Predictions = {
        stem: [(r.box, r.score) for r in found] for stem, found in regions.items()
    }
    scores = [DiscoveryResult.task_score([s for _, s in preds[stem]]) for stem in preds]
    lowest = [min((s for _, s in preds[stem]), default=0.0) for stem in preds]
    quality = [task_quality([b for b, _ in preds[stem]], gt[stem].boxes) for stem in preds]
    region_rho, _ = score_iou_spearman(preds, gt)
    empty = sum(not found for found in regions.values())
    cells = [
        method,
        str(len(preds)),
        str(empty),
        str(len(set(scores))),
        f"{min(scores):.3f} / {statistics.median(scores):.3f} / {max(scores):.3f}",
        format_rho(spearman(scores, quality)),
        format_rho(region_rho),
        str(len(set(lowest))),
        f"{min(lowest):.3f} / {max(lowest):.3f}",
        format_rho(spearman(lowest, quality)),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", nargs="+", default=list(methods.METHOD_NAMES), choices=methods.METHOD_NAMES
    )
    parser.add_argument(
        "--max-side", type=int, default=None, help="longer-side cap [each method's default]"
    )
    parser.add_argument("--cad-iterations", type=int, default=20, help="detector SGD steps")
    parser.add_argument(
        "--cad-quantile",
        type=float,
        default=0.9,
        help="quantile of the detector's raw confidences to serve it at",
    )
    args = parser.parse_args()
    photos, gt = example_photos()
    torch.manual_seed(0)
    backbone = load_backbone("dino_vits16", device="cpu", random_weights=True)
    lines, notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for method in args.methods:
            if method == "cad":
                pseudo = feature_regions(backbone, "lost", photos, args.max_side, None)
                regions, threshold = detector_regions(
                    pseudo, photos, folder, args.cad_iterations, args.cad_quantile
                )
                notes.append(
                    f"cad: {args.cad_iterations} steps on LOST's pseudo-boxes, served at "
                    f"score_threshold={threshold} (quantile {args.cad_quantile} of its raw "
                    "confidences)"
                )
            else:
                fitted = None
                if methods.get(method).fitted_required:
                    fitted = fit_rps(backbone, photos, args.max_side, folder)
                regions = feature_regions(backbone, method, photos, args.max_side, fitted)
            lines.append(row(method, regions, gt))
    side = (
        "each method's default max side" if args.max_side is None else f"max side {args.max_side}"
    )
    print(
        f"\n### Task scores on the {len(photos)} example photos with ground truth (VOC 2007 and "
        f"COCO8 examples), ViT-S/16 with seeded random weights, {side}, CPU\n"
    )
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    print("\n".join(lines))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
