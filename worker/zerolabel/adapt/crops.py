"""Multi-crop views of images (DINO) and of video clips (DoRA), drawn from a given generator.

Every random choice (crop box, flip, colour jitter and its order, grayscale, blur radius,
solarization) is drawn from the :class:`torch.Generator` the caller passes, never from a
global generator: the training loop seeds one per image and step, so a view is the same
whichever process computes it and however often the run was resumed.

* :func:`image_views`: DINO's ``DataAugmentationDINO``: two global crops (area 40-100 %,
  bicubic, flip, jitter, grayscale; blur always on the first, 10 % on the second, which may be
  solarized) and ``local_crops`` local ones (area 5-40 %, blur 50 %).
* :func:`clip_views`: DoRA's: one crop of the whole clip (area 20-100 %, to 300/224 of the
  global size), then one global crop of it shared by every frame (area 40-100 %, flipped
  together), jitter, grayscale and a 10 % blur per frame; each frame's local crops come from the
  first crop, without flip, as in the authors' code.

Pixels are float RGB in [0, 1], ``[3, H, W]``; views come back normalised with the backbone's
mean and standard deviation. The blur's sigma is PIL's radius (DINO blurs PIL images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect ratios of a random resized crop (torchvision's)
_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue (DINO)
_BLUR_RADIUS = (0.1, 2.0)
_SOLARIZE_THRESHOLD = 128 / 255
_CLIP_FIRST_CROP = 300 / 224  # DoRA crops clips to 300 px before its 224 px global crop


@dataclass(frozen=True)
class Box:
    """A crop in source pixels: top-left corner and size."""

    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Photometric:
    """Probabilities of the colour changes of one kind of view."""

    jitter: float = 0.8
    grayscale: float = 0.2
    blur: float = 0.5
    solarize: float = 0.0


GLOBAL_1 = Photometric(blur=1.0)
GLOBAL_2 = Photometric(blur=0.1, solarize=0.2)
LOCAL = Photometric(blur=0.5)
CLIP_FRAME = Photometric(blur=0.1)


@dataclass(frozen=True)
class CropSettings:
    """Sizes, crop scales and normalisation of the views."""

    global_size: int
    local_size: int
    local_crops: int
    global_scale: tuple[float, float]
    local_scale: tuple[float, float]
    clip_scale: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One float in [low, high) from ``generator``."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def chance(generator: torch.Generator, probability: float) -> bool:
    """True with ``probability`` (one draw, whatever the probability)."""
    return uniform(generator) < probability


def random_box(generator: torch.Generator, hw: tuple[int, int], scale: tuple[float, float]) -> Box:
    """torchvision's ``RandomResizedCrop`` box: an area share in ``scale`` and an aspect ratio
    in [3/4, 4/3] (log-uniform), ten tries, then the central crop of the clamped ratio."""
    height, width = hw
    area = height * width
    log_ratio = (math.log(_RATIO[0]), math.log(_RATIO[1]))
    for _ in range(10):
        target = area * uniform(generator, *scale)
        ratio = math.exp(uniform(generator, *log_ratio))
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return Box(top, left, h, w)
    ratio = width / height
    if ratio < _RATIO[0]:
        w, h = width, round(width / _RATIO[0])
    elif ratio > _RATIO[1]:
        h, w = height, round(height * _RATIO[1])
    else:
        w, h = width, height
    return Box((height - h) // 2, (width - w) // 2, h, w)


def crop(pixels: Tensor, box: Box, size: int, *, bicubic: bool = True) -> Tensor:
    """``pixels[..., box]`` resized to ``size x size`` (antialiased), values kept in [0, 1]."""
    mode = InterpolationMode.BICUBIC if bicubic else InterpolationMode.BILINEAR
    out = TF.resized_crop(
        pixels, box.top, box.left, box.height, box.width, [size, size], mode, antialias=True
    )
    clamped: Tensor = out.clamp_(0.0, 1.0)
    return clamped


def photometric(view: Tensor, generator: torch.Generator, kinds: Photometric) -> Tensor:
    """Colour jitter (its four changes in a random order), grayscale, blur and solarization."""
    if chance(generator, kinds.jitter):
        view = _jitter(view, generator)
    if chance(generator, kinds.grayscale):
        view = TF.rgb_to_grayscale(view, num_output_channels=3)
    if chance(generator, kinds.blur):
        view = _blur(view, uniform(generator, *_BLUR_RADIUS))
    if chance(generator, kinds.solarize):
        view = TF.solarize(view, _SOLARIZE_THRESHOLD)
    return view


def _jitter(view: Tensor, generator: torch.Generator) -> Tensor:
    brightness, contrast, saturation, hue = _JITTER
    factors = (
        uniform(generator, 1 - brightness, 1 + brightness),
        uniform(generator, 1 - contrast, 1 + contrast),
        uniform(generator, 1 - saturation, 1 + saturation),
        uniform(generator, -hue, hue),
    )
    changes = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for index in torch.randperm(4, generator=generator).tolist():
        view = changes[index](view, factors[index])
    return view


def _blur(view: Tensor, sigma: float) -> Tensor:
    side = min(view.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, side if side % 2 else side - 1)
    blurred: Tensor = TF.gaussian_blur(view, [kernel, kernel], [sigma, sigma])
    return blurred


def _normalise(view: Tensor, settings: CropSettings) -> Tensor:
    normalised: Tensor = TF.normalize(view, list(settings.mean), list(settings.std))
    return normalised


def _flip(view: Tensor, generator: torch.Generator) -> Tensor:
    return TF.horizontal_flip(view) if chance(generator, 0.5) else view


def image_views(
    pixels: Tensor, generator: torch.Generator, settings: CropSettings
) -> tuple[Tensor, Tensor]:
    """DINO's views of one image.

    Args:
        pixels: [3, H, W] float RGB in [0, 1].
        generator: where every random choice comes from.
        settings: sizes, scales, normalisation.

    Returns:
        ``[2, 3, G, G]`` global views and ``[local_crops, 3, L, L]`` local views, normalised.
    """
    hw = (pixels.shape[-2], pixels.shape[-1])
    views = []
    for kinds in (GLOBAL_1, GLOBAL_2):
        box = random_box(generator, hw, settings.global_scale)
        view = _flip(crop(pixels, box, settings.global_size), generator)
        views.append(_normalise(photometric(view, generator, kinds), settings))
    local = []
    for _ in range(settings.local_crops):
        box = random_box(generator, hw, settings.local_scale)
        view = _flip(crop(pixels, box, settings.local_size), generator)
        local.append(_normalise(photometric(view, generator, LOCAL), settings))
    return torch.stack(views), _stack(local, settings.local_size)


def clip_views(
    frames: Tensor, generator: torch.Generator, settings: CropSettings
) -> tuple[Tensor, Tensor]:
    """DoRA's views of one clip.

    Args:
        frames: [F, 3, H, W] float RGB in [0, 1].
        generator: where every random choice comes from.
        settings: sizes, scales, normalisation.

    Returns:
        ``[F, 3, G, G]`` global views (the teacher's, and the student's once masked) and
        ``[F, local_crops, 3, L, L]`` local views, normalised.
    """
    hw = (frames.shape[-2], frames.shape[-1])
    first_side = round(settings.global_size * _CLIP_FIRST_CROP)
    first = crop(frames, random_box(generator, hw, settings.clip_scale), first_side, bicubic=False)
    box = random_box(generator, (first_side, first_side), settings.global_scale)
    shared = crop(first, box, settings.global_size, bicubic=False)
    if chance(generator, 0.5):
        shared = TF.horizontal_flip(shared)
    views = [_normalise(photometric(frame, generator, CLIP_FRAME), settings) for frame in shared]
    local = []
    for frame in first:
        crops = []
        for _ in range(settings.local_crops):
            box = random_box(generator, (first_side, first_side), settings.local_scale)
            view = crop(frame, box, settings.local_size)
            crops.append(_normalise(photometric(view, generator, LOCAL), settings))
        local.append(_stack(crops, settings.local_size))
    return torch.stack(views), torch.stack(local)


def _stack(views: list[Tensor], size: int) -> Tensor:
    return torch.stack(views) if views else torch.empty(0, 3, size, size)
