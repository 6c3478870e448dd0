"""A seeded train/val split of a dataset, by image; negatives take part like any image."""

from __future__ import annotations

import random

from zerolabel.formats.dataset import Dataset

SPLITS = ("train", "val")
"""The split names, as folders and list files of the writers use them."""


def split_images(ds: Dataset, val_fraction: float, seed: int = 0) -> None:
    """Set each image's ``split`` to ``"train"`` or ``"val"``, in place.

    ``round(val_fraction * n)`` images, drawn by a generator seeded with ``seed``, go to val,
    at least one when ``val_fraction > 0`` and at least one stays in train (with two images or
    more). The same dataset, fraction and seed give the same split.

    Args:
        ds: the dataset; its images, negatives included, are split.
        val_fraction: share of the images for validation, in [0, 1).
        seed: seed of the draw.

    Raises:
        ValueError: ``val_fraction`` outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} is not in [0, 1): e.g. 0.2 for 20 %")
    n = len(ds.images)
    n_val = round(val_fraction * n)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    for index, image in enumerate(ds.images):
        image.split = "val" if index in val else "train"
