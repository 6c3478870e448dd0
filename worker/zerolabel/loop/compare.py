"""Several discovery methods run on the same ground-truth images, one row of metrics each.

Behind ``zerolabel eval --gt GT --images DIR --method lost --method maskcut``: every method runs
in this process on the images of ``DIR`` that have ground truth, with the same settings and one
shared backbone, and is scored like a prediction file
(:func:`zerolabel.evaluation.metrics.report_for`): CorLoc, AP50, AP, AR100, and the Spearman
correlations (:mod:`zerolabel.evaluation.rank`) of region score and IoU (``region rho``) and of
task score and task quality (``task rho``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zerolabel.evaluation.ground_truth import (
    GroundTruth,
    keyed_by_ground_truth,
    match_ground_truth,
    warn_unmatched,
)
from zerolabel.evaluation.metrics import EvalReport, Predictions, format_rho, report_for

if TYPE_CHECKING:
    from zerolabel.settings import WorkerSettings

logger = logging.getLogger(__name__)

COLUMNS = (
    "method",
    "images",
    "failed",
    "CorLoc %",
    "AP50 %",
    "AP %",
    "AR100 %",
    "regions",
    "region rho",
    "task rho",
)
"""Header of :func:`format_rows`; ``rho``: Spearman's rank correlation."""


@dataclass(frozen=True)
class MethodRow:
    """One method's metrics on the ground-truth images."""

    method: str
    report: EvalReport
    failed: int  # images that could not be loaded or run (misses in CorLoc)


def images_with_ground_truth(files: Sequence[Path], gt: GroundTruth) -> list[Path]:
    """The files that have ground truth, in order, one per ground-truth image; the others are
    counted in a warning. Matched by stem
    (:func:`zerolabel.evaluation.ground_truth.match_ground_truth`).

    Raises:
        ValueError: no file matches (the message names a ground-truth stem to look for).
    """
    matched = match_ground_truth([path.stem for path in files], gt)
    chosen: dict[str, Path] = {}
    for path in files:
        if path.stem in matched:
            chosen.setdefault(matched[path.stem], path)
    if not chosen:
        example = next(iter(sorted(gt)), "none")
        raise ValueError(
            f"none of the {len(files)} image(s) has ground truth (matched by file stem, e.g. "
            f"{example!r}): point --images at the images the ground truth describes"
        )
    unmatched = [path.stem for path in files if path.stem not in matched]
    warn_unmatched(unmatched, len(files), "images of --images")
    return list(chosen.values())


def evaluate_methods(
    settings: WorkerSettings,
    names: Sequence[str],
    files: Sequence[Path],
    gt: GroundTruth,
    preset: str = "default",
) -> list[MethodRow]:
    """Run each method on ``files`` and score it against ``gt``.

    Args:
        settings: worker settings (backbone, weights, device, fitted file...); each method
            runs with them and its own defaults.
        names: registered method names, in the order of the rows.
        files: image files, matched to ``gt`` by stem.
        gt: ground truth by file stem.
        preset: the input setting of every method (:data:`zerolabel.methods.PRESETS`).

    Raises:
        ConfigError: a method these settings cannot run (a missing fitted or detector file).
        WeightsError: the weights cannot be loaded.
    """
    from zerolabel.loop.predict import BatchJob, load_runner, with_overrides
    from zerolabel.pipeline import ModelStore
    from zerolabel.progress import track

    store = ModelStore(settings)  # one backbone for all the feature methods
    rows = []
    for name in names:
        chosen = with_overrides(settings, {"method": name})
        job = BatchJob(load_runner(store, chosen, chosen.spec(preset=preset)), chosen)
        preds: Predictions = {}
        failed = 0
        running = track(job.discover(files), f"eval {name}", total=len(files), unit="image")
        for path, outcome in running:
            if isinstance(outcome, str):
                logger.warning("%s: skipped %s: %s", name, path, outcome)
                failed += 1
                continue
            preds[path.stem] = [(region.box, region.score) for region in outcome.regions]
        rows.append(MethodRow(name, report_for(keyed_by_ground_truth(preds, gt), gt), failed))
    return rows


def format_rows(rows: Sequence[MethodRow]) -> str:
    """An aligned table, one line per method; metrics in percent, rho with two decimals."""
    table: list[tuple[str, ...]] = [COLUMNS]
    for row in rows:
        r = row.report
        metrics = [_percent(v) for v in (r.corloc, r.ap50, r.ap, r.ar100)]
        cells = (row.method, str(r.n_images), str(row.failed), *metrics, str(r.n_regions))
        table.append((*cells, format_rho(r.spearman), format_rho(r.task_spearman)))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    )


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"
