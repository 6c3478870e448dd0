"""``zerolabel train-found``: FOUND's 1x1 head (``D -> 1``) trained on a dataset's patches.

Targets per patch are FOUND's own coarse object masks
(:func:`zerolabel.discovery.found.coarse_object_mask`, what the authors train on), or the
corrected annotations of a Label Studio project (boxes and brush masks,
:func:`zerolabel.loop.fitting.object_targets`). The loss is the binary cross-entropy of the
head's logit per patch, as in the paper (without its bilateral-solver refinement).

The head is a logistic regression on the keys. To keep memory bounded, at most
``patches_per_image`` patches of each image are kept (a seeded random subset); features are
standardised for training (well-conditioned steps whatever the keys' scale) and the
standardisation is folded back into the weights, so the saved head applies to raw keys:
``sigmoid(k . head_weight + head_bias)``. Initial weights are zero and the batch order comes
from a seeded generator: the same data and settings give the same file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zerolabel.discovery.found import coarse_object_mask
from zerolabel.fitted import Fitted
from zerolabel.loop.fitting import (
    FitReport,
    FitSample,
    SampleFeatures,
    effective_max_side,
    object_targets,
    sample_features,
)
from zerolabel.progress import Progress
from zerolabel.vit.backbone import Backbone

KIND = "found-head"
"""The fitted kind method ``found`` reads."""

MIN_STD = 1e-6
"""Feature dimensions with a smaller standard deviation are not rescaled for training."""


@dataclass(frozen=True)
class HeadTraining:
    """How the head is trained."""

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 4096
    patches_per_image: int = 1024
    seed: int = 0
    tau: float = 0.3  # FOUND's background threshold, for the coarse targets

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patches_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def train_head(
    x: torch.Tensor, y: torch.Tensor, config: HeadTraining = HeadTraining()
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Fit ``sigmoid(x . w + b)`` to targets ``y`` with binary cross-entropy (Adam).

    Args:
        x: [M, D] patch features.
        y: [M] targets in [0, 1].
        config: epochs, learning rate, batch size and seed.

    Returns:
        ``w`` [D] and ``b`` [1] for raw features, and the mean loss of the last epoch.
    """
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"need [M, D] features and [M] targets, M >= 1; got {x.shape}, {y.shape}")
    x, y = x.double(), y.double()
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp(min=MIN_STD)
    standard = ((x - mean) / std).float()
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    loss_sum = 0.0
    with Progress("training the FOUND head", config.epochs, unit="epoch") as progress:
        for _ in range(config.epochs):
            loss_sum = 0.0
            order = torch.randperm(x.shape[0], generator=generator)
            for start in range(0, x.shape[0], config.batch_size):
                batch = order[start : start + config.batch_size]
                optimizer.zero_grad()
                logits = standard[batch] @ weight + bias
                loss = F.binary_cross_entropy_with_logits(logits, y[batch].float())
                torch.autograd.backward(loss)
                optimizer.step()
                loss_sum += float(loss.detach()) * batch.numel()
            progress.advance(1, note=f"loss {loss_sum / x.shape[0]:.4f}")
    w = weight.detach().double() / std
    b = bias.detach().double() - (w * mean).sum()
    return w.float(), b.float(), loss_sum / x.shape[0]


def fit_found(
    samples: Iterable[FitSample],
    backbone: Backbone,
    *,
    backbone_name: str,
    weights: str,
    max_side: int | None = None,
    config: HeadTraining = HeadTraining(),
    from_annotations: bool = False,
) -> tuple[Fitted, FitReport]:
    """The ``found-head`` fitted file of a dataset.

    Args:
        samples: the images (with their annotated objects when ``from_annotations``).
        backbone: the loaded ViT.
        backbone_name: how settings name it (``ZEROLABEL_BACKBONE``): the file is bound to it.
        weights: how model_version names its weights (``WorkerSettings.weights``).
        max_side: longer-side cap of the images (None: the method's default, 0: full size).
        config: how the head is trained.
        from_annotations: targets from the samples' objects instead of coarse FOUND masks.

    Returns:
        The fit (tensors ``head_weight``, ``head_bias``; meta: images, patches, targets,
        epochs, loss) and what was read.

    Raises:
        ValueError: no image could be read, or a sample has no annotated objects to learn from.
    """
    side = effective_max_side("found", max_side)
    report = FitReport()
    generator = torch.Generator().manual_seed(config.seed)
    xs, ys = [], []
    for item in sample_features(backbone, samples, side, report):
        target = _targets(item, config.tau, from_annotations).flatten()
        keep = torch.randperm(target.numel(), generator=generator)[: config.patches_per_image]
        keep = keep.sort().values
        xs.append(item.feats.k.detach().to("cpu", torch.float32)[keep])
        ys.append(target[keep].float())
    if not xs:
        raise ValueError("no image could be read: nothing to train the FOUND head on")
    x, y = torch.cat(xs), torch.cat(ys)
    weight, bias, loss = train_head(x, y, config)
    meta = {
        "images": report.images,
        "patches": int(x.shape[0]),
        "targets": "annotations" if from_annotations else f"found tau={config.tau}",
        "epochs": config.epochs,
        "loss": round(loss, 6),
        "max_side": side,
    }
    fitted = Fitted(KIND, backbone_name, weights, {"head_weight": weight, "head_bias": bias}, meta)
    return fitted, report


def _targets(item: SampleFeatures, tau: float, from_annotations: bool) -> torch.Tensor:
    feats, sample = item.feats, item.sample
    if not from_annotations:
        return coarse_object_mask(feats.k, feats.grid_hw, feats.cls_attention, tau).cpu()
    if sample.objects is None or sample.annotated_hw is None:
        raise ValueError(f"{sample.name}: no annotation to learn from")
    return object_targets(sample.objects, sample.annotated_hw, item.frame)
