"""``zerolabel rps-fit``: the foreground direction of representer point selection, in one pass.

Every patch of every image adds its raw key and its L2-normalised key to two running sums
(float64); no feature is kept. At the end ``v`` and ``u`` are the sums over the patch count and
the direction is :func:`zerolabel.discovery.rps.foreground_direction` of them. Each patch counts
once, so a larger image weighs more (the authors' images are all 224 x 224, where this equals
their mean over images).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zerolabel.discovery.rps import foreground_direction
from zerolabel.fitted import Fitted
from zerolabel.loop.fitting import FitReport, FitSample, effective_max_side, sample_features
from zerolabel.vit.backbone import Backbone

KIND = "rps"
"""The fitted kind method ``rps`` reads."""


@dataclass
class DirectionSums:
    """Running sums of raw and L2-normalised patch features (float64)."""

    raw: torch.Tensor | None = None
    unit: torch.Tensor | None = None
    patches: int = 0
    images: int = 0

    def add(self, keys: torch.Tensor) -> None:
        """Add the [N, D] patch features of one image."""
        if keys.ndim != 2:
            raise ValueError(f"keys must be [N, D], got shape {tuple(keys.shape)}")
        keys64 = keys.detach().to("cpu", torch.float64)
        raw, unit = keys64.sum(dim=0), F.normalize(keys64, p=2, dim=1).sum(dim=0)
        if self.raw is None or self.unit is None:
            self.raw, self.unit = raw, unit
        elif self.raw.shape != raw.shape:
            raise ValueError(f"features of width {raw.shape[0]} after {self.raw.shape[0]}")
        else:
            self.raw, self.unit = self.raw + raw, self.unit + unit
        self.patches += keys.shape[0]
        self.images += 1

    def direction(self) -> torch.Tensor:
        """``w*`` of the features added so far, [D] float32.

        Raises:
            ValueError: nothing was added, or the features give no direction.
        """
        if self.raw is None or self.unit is None or self.patches == 0:
            raise ValueError("no image could be read: nothing to fit the direction on")
        return foreground_direction(self.raw / self.patches, self.unit / self.patches)


def fit_rps(
    samples: Iterable[FitSample],
    backbone: Backbone,
    *,
    backbone_name: str,
    weights: str,
    max_side: int | None = None,
) -> tuple[Fitted, FitReport]:
    """The ``rps`` fitted file of a dataset (one pass, features never kept).

    Args:
        samples: the images.
        backbone: the loaded ViT.
        backbone_name: how settings name it (``ZEROLABEL_BACKBONE``): the file is bound to it.
        weights: how model_version names its weights (``WorkerSettings.weights``).
        max_side: longer-side cap of the images (None: the method's default, 0: full size),
            as prediction will use.

    Returns:
        The fit (tensor ``direction``; meta: images, patches, max_side) and what was read.
    """
    side = effective_max_side("rps", max_side)
    sums, report = DirectionSums(), FitReport()
    for item in sample_features(backbone, samples, side, report):
        sums.add(item.feats.k)
    fitted = Fitted(
        KIND,
        backbone_name,
        weights,
        {"direction": sums.direction()},
        {"images": sums.images, "patches": sums.patches, "max_side": side},
    )
    return fitted, report
