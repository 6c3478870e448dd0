"""Decode images safely: size limits, EXIF orientation, any PIL mode to RGB uint8.

Fetching over the network lives in :mod:`zerolabel.io.fetch`; this module only turns bytes or a
local file into pixels, and names the source and the cause when it cannot.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from zerolabel.errors import ImageLoadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File suffixes read as images (lower case): folders are searched for these."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # width and height swap


@dataclass(frozen=True)
class ImageLimits:
    """Refuse images before decoding them when they are too big to be plausible."""

    max_bytes: int = 64 * 2**20
    max_pixels: int = 100_000_000


@dataclass(frozen=True)
class LoadedImage:
    """RGB pixels plus the size of the original image (after EXIF orientation).

    ``pixels`` may be smaller than ``original_hw`` when the JPEG decoder was asked for a reduced
    resolution; boxes are always reported in ``original_hw`` pixels.
    """

    source: str
    pixels: npt.NDArray[np.uint8]  # [h, w, 3]
    original_hw: tuple[int, int]
    sha256: str  # of the encoded bytes: the cache key of this image's content


def read_file(path: str | Path, limits: ImageLimits) -> bytes:
    """Read a local image file, refusing missing, empty and oversized files."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
    except OSError as exc:
        raise ImageLoadError(source, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageLoadError(source, "empty file")
    if size > limits.max_bytes:
        raise ImageLoadError(source, f"file is {size} bytes, over the {limits.max_bytes} limit")
    return Path(path).read_bytes()


def load_file(path: str | Path, limits: ImageLimits, *, max_side: int | None = None) -> LoadedImage:
    """Read and decode a local image file (see :func:`decode`)."""
    return decode(read_file(path, limits), str(path), limits, max_side=max_side)


def decode(
    data: bytes, source: str, limits: ImageLimits, *, max_side: int | None = None
) -> LoadedImage:
    """Decode encoded image bytes to RGB.

    Args:
        data: the encoded file.
        source: path or URL, used in error messages.
        limits: byte and pixel limits checked before decoding.
        max_side: the longer side the caller will resize to; lets JPEG decode at a reduced
            scale (never below this size), which saves time and memory on large photos.

    Raises:
        ImageLoadError: empty, not an image, too large, corrupt or truncated.
    """
    if not data:
        raise ImageLoadError(source, "empty file")
    if len(data) > limits.max_bytes:
        raise ImageLoadError(source, f"{len(data)} bytes, over the {limits.max_bytes} limit")
    image = _open(data, source, limits)
    original_hw = _oriented_hw(image)
    if max_side and image.format == "JPEG" and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        pixels = to_rgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(source, f"corrupt or truncated image ({exc})") from None
    return LoadedImage(source, pixels, original_hw, hashlib.sha256(data).hexdigest())


def _open(data: bytes, source: str, limits: ImageLimits) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageLoadError(source, "not an image (unrecognised format)") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(source, f"over the {limits.max_pixels}-pixel limit ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(source, f"corrupt or truncated image ({exc})") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            source, f"{width}x{height} pixels, over the {limits.max_pixels}-pixel limit"
        )
    if width == 0 or height == 0:
        raise ImageLoadError(source, f"degenerate size {width}x{height}")
    return image


def image_hw(path: str | Path) -> tuple[int, int]:
    """Height and width of an image file as displayed, from its header only (EXIF rotations 5-8
    swap the two; unreadable EXIF keeps the stored orientation).

    Raises:
        OSError: the file cannot be opened or is not an image PIL knows.
    """
    with Image.open(path) as image:
        return _oriented_hw(image)


def _oriented_hw(image: Image.Image) -> tuple[int, int]:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError):
        orientation = 1  # unreadable EXIF: keep the stored orientation
    if orientation in _TRANSPOSED_ORIENTATIONS:
        return (image.width, image.height)
    return (image.height, image.width)


def to_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    """Any PIL mode -> [H, W, 3] uint8.

    16-bit and 32-bit integer images are scaled by their bit depth (not clipped); transparent
    pixels are composited onto white.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 255.0 if values.max(initial=0) <= 255 else 65535.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
