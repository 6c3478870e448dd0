"""Pixels -> normalised network input (padded, or cropped to whole patches), and the Frame that
maps results back."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from zerolabel.geometry import Frame


def content_size(
    image_hw: tuple[int, int], max_side: int | None = None, square: int | None = None
) -> tuple[int, int]:
    """Size the image is resized to before padding.

    Args:
        image_hw: original (height, width).
        max_side: shrink (never enlarge) so the longer side is at most this; None keeps the size.
        square: resize to ``square x square`` ignoring the aspect ratio (MaskCut authors' input).
    """
    if square:
        return (square, square)
    h, w = image_hw
    if not max_side or max(h, w) <= max_side:
        return (h, w)
    scale = max_side / max(h, w)
    return (max(1, round(h * scale)), max(1, round(w * scale)))


def resized(
    pixels: npt.NDArray[np.uint8], frame: Frame, *, square: bool = False
) -> npt.NDArray[np.uint8]:
    """The pixels the network sees, before normalisation: resized to ``frame.content_hw``.

    A ``square`` input is resized with PIL's LANCZOS filter, as MaskCut's authors resize
    theirs; any other resize (the ``max_side`` cap) is bicubic, the filter of DINO's own
    transforms (the papers of LOST and TokenCut run at full resolution and name no filter).
    Pixels already at the content size are returned as they are.

    Args:
        pixels: [h, w, 3] uint8 RGB (may be a reduced decode of the original).
        frame: target geometry.
        square: the content size is a ``square x square`` input (MaskCut authors' setting).

    Returns:
        [ch, cw, 3] uint8 RGB.
    """
    ch, cw = frame.content_hw
    if pixels.shape[:2] == (ch, cw):
        return pixels
    resample = Image.Resampling.LANCZOS if square else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(pixels).resize((cw, ch), resample))


def to_input(
    pixels: npt.NDArray[np.uint8],
    frame: Frame,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    square: bool = False,
) -> torch.Tensor:
    """Resize to ``frame.content_hw`` (:func:`resized`), normalise, then fit to
    ``frame.padded_hw``: zero-padded on the bottom/right, or, for a cropping frame, cut there to
    whole patches (DSS's authors keep ``[:H // p * p, :W // p * p]`` of the image).

    Padding comes after normalisation, as in LOST/TokenCut, so padded cells are exactly zero.

    Args:
        pixels: [h, w, 3] uint8 RGB (may be a reduced decode of the original).
        frame: target geometry.
        mean: per-channel mean of the model's pretraining.
        std: per-channel std.
        square: the content size is a square input (LANCZOS, see :func:`resized`).

    Returns:
        [3, Hp, Wp] float32 with Hp, Wp multiples of the patch size.
    """
    ch, cw = frame.content_hw
    pixels = resized(pixels, frame, square=square)
    writable = np.require(pixels, requirements=["C", "W"])  # PIL arrays are read-only
    image = torch.from_numpy(writable).permute(2, 0, 1).float().div_(255.0)
    image = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    ph, pw = frame.padded_hw
    kept_h, kept_w = min(ch, ph), min(cw, pw)  # all of the content unless the frame crops
    padded = torch.zeros((3, ph, pw), dtype=torch.float32)
    padded[:, :kept_h, :kept_w] = image[:, :kept_h, :kept_w]
    return padded
