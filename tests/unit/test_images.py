"""Image decoding: limits, corrupt input, EXIF orientation, unusual modes."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from zerolabel.errors import ImageLoadError
from zerolabel.io.images import ImageLimits, decode, load_file

LIMITS = ImageLimits()


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but which carries no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    chunk += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(b"hello, not an image", "not an image", id="text"),
        pytest.param(_png_header_only(200_000, 200_000), "over the", id="absurd-size"),
        pytest.param(_png_header_only(64, 64), "corrupt or truncated", id="no-pixels"),
    ],
)
def test_bad_bytes_raise_with_source_and_reason(data: bytes, reason: str):
    with pytest.raises(ImageLoadError, match=reason) as info:
        decode(data, "task 7: photo.png", LIMITS)
    assert str(info.value).startswith("task 7: photo.png: ")


def test_truncated_jpeg_is_reported():
    data = _encode(Image.new("RGB", (300, 200), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageLoadError, match="corrupt or truncated"):
        decode(data[: len(data) // 3], "cut.jpg", LIMITS)


def test_byte_limit_and_missing_file(tmp_path: Path):
    path = tmp_path / "a.png"
    path.write_bytes(_encode(Image.new("RGB", (8, 8))))
    with pytest.raises(ImageLoadError, match="over the 10 limit"):
        load_file(path, ImageLimits(max_bytes=10))
    with pytest.raises(ImageLoadError, match="cannot read file"):
        load_file(tmp_path / "missing.png", LIMITS)


def test_exif_orientation_is_applied():
    pixels = np.zeros((40, 100, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # white stripe on the left of the stored image
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = decode(_encode(image, "JPEG", exif=exif, quality=95), "rot.jpg", LIMITS)
    assert loaded.original_hw == (100, 40) and loaded.pixels.shape == (100, 40, 3)
    assert loaded.pixels[:10].mean() > 200 and loaded.pixels[-10:].mean() < 50  # stripe on top


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(Image.new("L", (20, 10), 128), id="grayscale"),
        pytest.param(Image.new("P", (20, 10), 3), id="palette"),
        pytest.param(Image.new("RGBA", (20, 10), (0, 0, 0, 0)), id="transparent"),
        pytest.param(Image.new("1", (20, 10), 1), id="bilevel"),
    ],
)
def test_modes_become_rgb(image: Image.Image):
    loaded = decode(_encode(image), "x.png", LIMITS)
    assert loaded.pixels.shape == (10, 20, 3) and loaded.pixels.dtype == np.uint8
    if image.mode == "RGBA":
        assert (loaded.pixels == 255).all()  # transparent -> white


def test_sixteen_bit_is_scaled_not_clipped():
    values = np.full((10, 20), 40000, dtype=np.uint16)
    loaded = decode(_encode(Image.fromarray(values)), "depth.png", LIMITS)
    assert abs(int(loaded.pixels[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_large_jpeg_decodes_reduced_but_reports_original_size():
    data = _encode(Image.new("RGB", (4000, 3000), (90, 90, 90)), "JPEG")
    loaded = decode(data, "big.jpg", LIMITS, max_side=1000)
    assert loaded.original_hw == (3000, 4000)
    assert 1000 <= max(loaded.pixels.shape[:2]) < 4000


def test_content_hash_identifies_bytes():
    data = _encode(Image.new("RGB", (8, 8)))
    assert decode(data, "a", LIMITS).sha256 == decode(data, "b", LIMITS).sha256
