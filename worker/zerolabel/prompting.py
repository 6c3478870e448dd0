"""An annotator's prompt on an image -> one object, from the patch features the batch pass saw.

The interactive counterpart of :class:`zerolabel.pipeline.Discoverer`: clicks and rectangles in
fractions of the original image become patches of the grid the network saw (the same
:class:`~zerolabel.geometry.Frame` as the batch pass), a prompt method of
:mod:`zerolabel.discovery.prompts` finds the object on the patch grid, and the fast refinement of
:mod:`zerolabel.refine` fits it to the image's edges.

A worker keeps the patch keys of recently seen images in a :class:`FeatureCache`, by image
content and everything that shapes the features (backbone, weights, input size, crop, positional
embedding): the first click on an image pays one forward pass (none when the batch pass saw the
image), further clicks none.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from zerolabel import geometry, quality, refine
from zerolabel.contract import Box, DiscoverySpec, Prompt, Region
from zerolabel.discovery import prompts
from zerolabel.io.images import LoadedImage
from zerolabel.vit import preprocess

PROMPT_METHOD = "prompt"
"""The method name regions found from prompts carry."""


@dataclass(frozen=True)
class Seen:
    """What a forward pass leaves for prompts on one image.

    Attributes:
        frame: how the image was fed to the network.
        keys: [N, D] float32 patch keys of the last block, on the CPU.
        image: the loaded image (its pixels, for the refinement).
        square: whether the input was resized to a square (aspect ignored).
    """

    frame: geometry.Frame
    keys: torch.Tensor
    image: LoadedImage
    square: bool

    @property
    def nbytes(self) -> int:
        return int(self.keys.numel() * self.keys.element_size() + self.image.pixels.nbytes)


FeatureKey = tuple[str, str, str, int | None, int | None, bool, str]


def feature_key(spec: DiscoverySpec, sha256: str) -> FeatureKey:
    """What makes two forward passes give the same patch keys for an image."""
    return (
        sha256,
        spec.backbone,
        spec.weights,
        spec.effective_max_side(),
        spec.square,
        spec.effective_crop(),
        spec.pos_embed,
    )


class FeatureCache:
    """The patch features of recently seen images, least recently used dropped first.

    Thread-safe (the batch pass's loader threads and the worker's loop may both use it).

    Args:
        max_bytes: bound on the keys and pixels held (``ZEROLABEL_FEATURE_CACHE_MB``).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[FeatureKey, Seen] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: FeatureKey) -> Seen | None:
        with self._lock:
            seen = self._items.get(key)
            if seen is not None:
                self._items.move_to_end(key)
            return seen

    def put(self, key: FeatureKey, seen: Seen) -> None:
        if seen.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = seen
            self._bytes += seen.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._items)


def answer(seen: Seen, prompt: Prompt, *, refined: bool = True) -> Region | None:
    """The object a prompt points at, in original-image pixels; None when nothing is found.

    Args:
        seen: the image's features.
        prompt: clicks and/or a rectangle, in fractions of the original image.
        refined: fit the mask to the image's edges (:func:`zerolabel.refine.guided_patch_mask`);
            else the patch mask at the original size.

    Raises:
        ValueError: a prompt with only background clicks and no rectangle (there is no object
            to carve from).
    """
    frame = seen.frame
    positives = [_patch(c.x, c.y, frame) for c in prompt.clicks if c.positive]
    negatives = [_patch(c.x, c.y, frame) for c in prompt.clicks if not c.positive]
    if not positives and prompt.box is None:
        raise ValueError("a background click needs an object first: click on the object")
    rect = _patch_box(prompt.box, frame) if prompt.box is not None else None
    found = prompts.object_from_prompt(seen.keys, frame.grid_hw, positives, negatives, rect)
    if found is None:
        return None
    patch_mask = found.mask.cpu().numpy().astype(bool)
    if refined:
        content = preprocess.resized(seen.image.pixels, frame, square=seen.square)
        pixel_mask = refine.guided_patch_mask(content, patch_mask, frame)
    else:
        pixel_mask = geometry.patch_mask_to_pixel_mask(patch_mask, frame)
    box = geometry.mask_to_box(pixel_mask)
    if box is None:
        return None
    score = quality.region_score(patch_mask, float(np.clip(found.score, 0.0, 1.0)))
    return Region(box, score, PROMPT_METHOD, geometry.rle_encode(pixel_mask))


def _patch(x: float, y: float, frame: geometry.Frame) -> tuple[int, int]:
    """The (row, col) patch under a point given in fractions of the original image."""
    (ch, cw), p, (gh, gw) = frame.content_hw, frame.patch_size, frame.grid_hw
    row = min(int(y * ch) // p, gh - 1)
    col = min(int(x * cw) // p, gw - 1)
    return (max(row, 0), max(col, 0))


def _patch_box(box: Box, frame: geometry.Frame) -> tuple[int, int, int, int]:
    """The patches a rectangle (fractions of the original image) covers: rows and columns
    ``[row0, row1)``, ``[col0, col1)``, at least one patch."""
    (ch, cw), p, (gh, gw) = frame.content_hw, frame.patch_size, frame.grid_hw
    row0 = min(int(box.y0 * ch) // p, gh - 1)
    col0 = min(int(box.x0 * cw) // p, gw - 1)
    row1 = max(min(-(-int(box.y1 * ch) // p), gh), row0 + 1)
    col1 = max(min(-(-int(box.x1 * cw) // p), gw), col0 + 1)
    return (row0, col0, row1, col1)
