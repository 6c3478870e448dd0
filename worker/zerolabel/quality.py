"""How far to trust a discovered region, without labels: the score Label Studio and COCO show.

A feature method's region score is the product of factors in [0, 1], each computed on the
region's patch mask (the ``[h, w]`` grid the method cut) or taken from the method:

- ``confidence``: the method's own score (:class:`zerolabel.discovery.ObjectMask`): the cut
  value ``1 - lambda`` of the normalized cut for TokenCut and MaskCut, the seed's degree
  contrast ``1 - d_seed / N`` for LOST.
- ``compactness``: the mask's share of its bounding box on the grid (1 for a filled
  rectangle). Ragged or sprawling masks, whose box holds much background, score lower.
- ``border``: ``1 - BORDER_PENALTY * sides``, where ``sides`` (0 to 4) counts the image
  sides the mask touches. An object cut by the image border is less likely to be boxed
  whole, and a mask hugging all four sides is most likely background.
- ``stability`` (optional, when a second mask of the same object is at hand, e.g. from a
  second input scale or a second method): the IoU of the two masks, the second resampled
  to the first one's grid.

A product lets any one weak signal pull a region down: a clean cut of a blob touching three
sides is not trusted. The score ranks regions (``zerolabel eval`` reports its Spearman
correlation with the IoU to ground truth); its absolute value is no probability. The detector
(``cad``) scores a region with its own confidence instead, rescaled from ``[score_threshold,
1]`` to [0, 1] (:func:`zerolabel.cad.inference.rescaled_confidence`).

The task score Label Studio's queue sorts by is the mean of the task's region scores, 0 without
regions (:meth:`DiscoveryResult.task_score <zerolabel.contract.DiscoveryResult.task_score>`,
which gives the reasons); ``zerolabel eval`` reports its Spearman correlation with the task's
quality against ground truth (:func:`zerolabel.evaluation.rank.task_quality`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

BORDER_PENALTY = 0.2
"""Trust lost per image side a mask touches: 0.8 for one side, 0.2 for all four."""

BoolGrid = npt.NDArray[np.bool_]
"""An ``[h, w]`` boolean patch mask."""


@dataclass(frozen=True)
class Quality:
    """The factors of one region's score, each in [0, 1]."""

    confidence: float
    compactness: float
    border: float
    stability: float | None = None  # None: no second mask to compare with

    @property
    def score(self) -> float:
        """The product of the factors, clipped to [0, 1]."""
        value = self.confidence * self.compactness * self.border
        if self.stability is not None:
            value *= self.stability
        return float(min(max(value, 0.0), 1.0))


def region_quality(mask: BoolGrid, confidence: float, second: BoolGrid | None = None) -> Quality:
    """The quality factors of one region.

    Args:
        mask: the region's ``[h, w]`` patch mask, not empty.
        confidence: the method's score of the region, in [0, 1].
        second: another mask of the same object (another scale or method), or None.

    Raises:
        ValueError: an empty or non-2-D mask, or a confidence outside [0, 1].
    """
    _check(mask)
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must lie in [0, 1], got {confidence}")
    return Quality(
        confidence=float(confidence),
        compactness=compactness(mask),
        border=border_factor(mask),
        stability=None if second is None else stability(mask, second),
    )


def region_score(mask: BoolGrid, confidence: float, second: BoolGrid | None = None) -> float:
    """:attr:`Quality.score` of :func:`region_quality` (same arguments)."""
    return region_quality(mask, confidence, second).score


def compactness(mask: BoolGrid) -> float:
    """Patches of the mask over patches of its bounding box on the grid, in (0, 1].

    Raises:
        ValueError: an empty or non-2-D mask.
    """
    _check(mask)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box_area = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return float(mask.sum() / box_area)


def sides_touched(mask: BoolGrid) -> int:
    """How many of the grid's four sides (top, bottom, left, right) the mask touches.

    Raises:
        ValueError: an empty or non-2-D mask.
    """
    _check(mask)
    return int(mask[0].any()) + int(mask[-1].any()) + int(mask[:, 0].any()) + int(mask[:, -1].any())


def border_factor(mask: BoolGrid) -> float:
    """``1 - BORDER_PENALTY * sides_touched(mask)``: 1 inside the image, 0.2 on all sides."""
    return 1.0 - BORDER_PENALTY * sides_touched(mask)


def stability(mask: BoolGrid, second: BoolGrid) -> float:
    """IoU of ``mask`` with ``second`` resampled (nearest patch centre) to ``mask``'s grid.

    Args:
        mask: ``[h, w]`` patch mask.
        second: ``[h2, w2]`` patch mask of the same image (any grid size).

    Returns:
        The IoU in [0, 1]; 0 when both are empty.
    """
    if mask.ndim != 2 or second.ndim != 2 or 0 in second.shape:
        raise ValueError(f"need two 2-D masks, got shapes {mask.shape} and {second.shape}")
    resampled = resample(second, (mask.shape[0], mask.shape[1]))
    union = int((mask | resampled).sum())
    return float((mask & resampled).sum() / union) if union else 0.0


def resample(mask: BoolGrid, grid_hw: tuple[int, int]) -> BoolGrid:
    """``mask`` on a ``grid_hw`` grid: each target cell takes the source cell under its centre.

    Both grids cover the same image, so cell ``i`` of ``h`` cells has its centre at
    ``(i + 0.5) / h`` of the height, whatever ``h``.
    """
    h, w = grid_hw
    rows = np.minimum(((np.arange(h) + 0.5) * mask.shape[0] / h).astype(int), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mask.shape[1] / w).astype(int), mask.shape[1] - 1)
    resampled: BoolGrid = mask[np.ix_(rows, cols)]
    return resampled


def _check(mask: BoolGrid) -> None:
    if mask.ndim != 2:
        raise ValueError(f"mask must be an [h, w] patch grid, got shape {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: an empty region has no quality")
