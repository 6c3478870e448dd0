"""What every discovery method returns: objects on the patch grid (:mod:`zerolabel.discovery`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)  # identity equality: tensors have no single truth value
class ObjectMask:
    """One discovered object on the patch grid (or on a finer grid of whole cells per patch)."""

    mask: torch.Tensor  # [h, w] bool patch mask, on the device of the keys; or [h c, w c]
    score: float  # method confidence in [0, 1]; each method documents its definition
    label: str | None = None  # the class a method tells it apart as (rps class-wise), if any

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
