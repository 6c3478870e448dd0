"""Pixels -> normalised, padded network input, and the Frame that maps results back."""

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


def to_input(
    pixels: npt.NDArray[np.uint8],
    frame: Frame,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """Resize to ``frame.content_hw`` (bicubic), normalise, zero-pad bottom/right.

    Padding comes after normalisation, as in LOST/TokenCut, so padded cells are exactly zero.

    Args:
        pixels: [h, w, 3] uint8 RGB (may be a reduced decode of the original).
        frame: target geometry.
        mean: per-channel mean of the model's pretraining.
        std: per-channel std.

    Returns:
        [3, Hp, Wp] float32 with Hp, Wp multiples of the patch size.
    """
    ch, cw = frame.content_hw
    if pixels.shape[:2] != (ch, cw):
        pixels = np.asarray(Image.fromarray(pixels).resize((cw, ch), Image.Resampling.BICUBIC))
    writable = np.require(pixels, requirements=["C", "W"])  # PIL arrays are read-only
    image = torch.from_numpy(writable).permute(2, 0, 1).float().div_(255.0)
    image = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    ph, pw = frame.padded_hw
    padded = torch.zeros((3, ph, pw), dtype=torch.float32)
    padded[:, :ch, :cw] = image
    return padded
