"""Unsupervised object discovery on ViT patch features, in patch-grid space.

Every method is a pure function ``method(keys, grid_hw, **params) -> list[ObjectMask]``:

- ``keys``: [N, D] last-block attention keys of the N = h * w patches, row-major
  (patch ``p`` is at row ``p // w``, column ``p % w``), on any device.
- ``grid_hw``: (h, w) of the patch grid.

Methods never see pixels, image sizes or files; :mod:`zerolabel.geometry` maps their patch masks
back to the image. "Nothing found" is the empty list. Their parameters, defaults and bounds are
registered in :mod:`zerolabel.methods`, which requests are checked against before they run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)  # identity equality: tensors have no single truth value
class ObjectMask:
    """One discovered object on the patch grid."""

    mask: torch.Tensor  # [h, w] bool patch mask, on the device of the keys
    score: float  # method confidence in [0, 1]; each method documents its definition

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be an [h, w] bool patch mask, got {self.mask.dtype} "
                f"of shape {tuple(self.mask.shape)}"
            )
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must lie in [0, 1], got {self.score}")


DiscoveryMethod = Callable[..., list[ObjectMask]]
"""Called as ``method(keys, grid_hw, **params)``; see the module docstring."""

# The method modules import ObjectMask from here, so they come after it. They are bound as
# modules (zerolabel.discovery.lost is the module, zerolabel.discovery.lost.lost the function).
from zerolabel.discovery import (  # noqa: E402
    dinoseg,
    dss,
    found,
    lost,
    maskcut,
    promerge,
    rps,
    tokencut,
)

METHODS: dict[str, DiscoveryMethod] = {
    "lost": lost.lost,
    "tokencut": tokencut.tokencut,
    "maskcut": maskcut.maskcut,
    "found": found.found,
    "rps": rps.rps,
    "dinoseg": dinoseg.dinoseg,
    "dss": dss.dss,
    "promerge": promerge.promerge,
}
"""The function of each feature method of :data:`zerolabel.methods.METHODS`, by name."""

__all__ = ["METHODS", "DiscoveryMethod", "ObjectMask"]
