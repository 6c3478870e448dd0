"""Synthetic patch features with planted objects, for the discovery tests.

Background patches point along one direction, each planted object along its own direction
(tilted away from the background, the way DINO keys of objects and background disagree), and
every patch gets Gaussian noise from a seeded generator, so each call is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Block = tuple[slice, slice]
"""(rows, cols) of a rectangular object on the patch grid."""


@dataclass(frozen=True)
class Scene:
    """Synthetic keys and the ground truth they were built from."""

    keys: torch.Tensor  # [h * w, dim] float32, row-major
    grid_hw: tuple[int, int]
    objects: list[torch.Tensor]  # one [h, w] bool mask per planted object


def block_mask(grid_hw: tuple[int, int], block: Block) -> torch.Tensor:
    """[h, w] bool mask that is True on ``block``."""
    mask = torch.zeros(grid_hw, dtype=torch.bool)
    mask[block] = True
    return mask


def planted_keys(
    grid_hw: tuple[int, int],
    objects: Sequence[Block | torch.Tensor] = (),
    *,
    dim: int = 32,
    noise: float = 0.1,
    away_from_background: float = 0.3,
    scale: float = 1.0,
    seed: int = 0,
) -> Scene:
    """Background along ``e0``; object ``k`` along ``e_{k+1} - away_from_background * e0``.

    Args:
        grid_hw: (h, w) of the patch grid.
        objects: blocks or [h, w] bool masks; a later object overwrites an earlier one.
        dim: feature dimension, > number of objects.
        noise: standard deviation of the per-coordinate Gaussian noise.
        away_from_background: how much each object direction points against the background
            (a negative raw dot product, which LOST relies on).
        scale: multiplies every feature (raw-key methods see norms, cosine ones do not).
        seed: seed of the noise generator.

    Returns:
        The scene: keys [h * w, dim] and one [h, w] bool mask per object.
    """
    if dim <= len(objects):
        raise ValueError(f"dim {dim} leaves no direction for {len(objects)} objects")
    generator = torch.Generator().manual_seed(seed)
    directions = torch.eye(dim)
    masks = [o.clone() if isinstance(o, torch.Tensor) else block_mask(grid_hw, o) for o in objects]
    signal = directions[0].expand(grid_hw[0] * grid_hw[1], dim).clone()
    for k, mask in enumerate(masks):
        signal[mask.flatten()] = directions[k + 1] - away_from_background * directions[0]
    keys = scale * (signal + noise * torch.randn(signal.shape, generator=generator))
    return Scene(keys=keys, grid_hw=grid_hw, objects=masks)


def random_blocks(grid_hw: tuple[int, int], count: int, generator: torch.Generator) -> list[Block]:
    """``count`` random blocks, each 2 to half the grid on a side (they may overlap).

    Args:
        grid_hw: (h, w) of the patch grid, each side >= 4.
        count: number of blocks.
        generator: source of randomness.
    """
    blocks = []
    for _ in range(count):
        sides = [
            int(torch.randint(2, max(3, n // 2 + 1), (1,), generator=generator)) for n in grid_hw
        ]
        starts = [
            int(torch.randint(0, n - side + 1, (1,), generator=generator))
            for n, side in zip(grid_hw, sides, strict=True)
        ]
        blocks.append(
            (slice(starts[0], starts[0] + sides[0]), slice(starts[1], starts[1] + sides[1]))
        )
    return blocks


def leaning_scene() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Three 4 x 4 blocks in a row on a background along e0: A and B lean towards the
    background (cosine 0.19, under the seed threshold 0.2), C between them away from it
    (-0.05). Seeds in A and B take C with them (cosine 0.47) but not each other (-0.21), so the
    proposals A+C and B+C both have mean key 0.07 with the background's, under ProMerge's
    filter limit 0.1, while their merged union A+B+C has 0.11.

    Returns:
        Keys [192, 6] of the (12, 16) grid, and the masks of A, C and B, left to right.
    """
    grid_hw = (12, 16)
    e = torch.eye(6)
    side = math.sqrt(1 - 0.19**2 - 0.6**2)
    directions = [
        0.19 * e[0] + 0.6 * e[1] + side * e[2],  # A
        -0.05 * e[0] + 0.8 * e[1] + math.sqrt(1 - 0.05**2 - 0.8**2) * e[3],  # C
        0.19 * e[0] + 0.6 * e[1] - side * e[2],  # B
    ]
    keys = e[0].repeat(grid_hw[0] * grid_hw[1], 1)
    parts = [block_mask(grid_hw, (slice(4, 8), slice(3 + 4 * k, 7 + 4 * k))) for k in range(3)]
    for part, direction in zip(parts, directions, strict=True):
        keys[part.flatten()] = direction
    return keys, parts
