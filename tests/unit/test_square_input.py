"""MaskCut's authors' input: a 480 x 480 LANCZOS resize of the full decode."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from zerolabel import pipeline
from zerolabel.contract import DiscoverySpec
from zerolabel.geometry import Frame
from zerolabel.io.images import ImageLimits, LoadedImage, decode
from zerolabel.pipeline import Discoverer
from zerolabel.vit import preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def photo(hw: tuple[int, int] = (200, 300), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*hw, 3)).astype(np.uint8)


def normalised(pixels: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
    return (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_the_square_resize_is_pil_lanczos_and_the_cap_stays_bicubic():
    pixels = photo()
    square = Frame((200, 300), preprocess.content_size((200, 300), 480, 480), 16)
    lanczos = np.asarray(Image.fromarray(pixels).resize((480, 480), Image.Resampling.LANCZOS))
    assert np.array_equal(preprocess.resized(pixels, square, square=True), lanczos)
    capped = Frame((200, 300), preprocess.content_size((200, 300), 150), 16)
    bicubic = np.asarray(Image.fromarray(pixels).resize((150, 100), Image.Resampling.BICUBIC))
    assert np.array_equal(preprocess.resized(pixels, capped), bicubic)
    assert not np.array_equal(bicubic, Image.fromarray(pixels).resize((150, 100), Image.LANCZOS))


def test_the_network_gets_the_lanczos_pixels_normalised(monkeypatch):
    batches: list[torch.Tensor] = []

    def extract(backbone: object, batch: torch.Tensor) -> list[object]:
        batches.append(batch)
        return [None] * len(batch)

    monkeypatch.setattr(pipeline.features, "extract", extract)
    backbone = SimpleNamespace(patch_size=16, mean_std=(MEAN, STD), device=torch.device("cpu"))
    spec = DiscoverySpec(method="maskcut", square=480)
    runner = Discoverer(backbone, spec)  # type: ignore[arg-type]
    pixels = photo()
    image = LoadedImage("a.png", pixels, (200, 300), "0")
    runner._forward([image], [runner.frame(image)])
    lanczos = np.asarray(Image.fromarray(pixels).resize((480, 480), Image.Resampling.LANCZOS))
    assert batches[0].shape == (1, 3, 480, 480)
    assert torch.allclose(batches[0][0], normalised(lanczos), atol=1e-6)


def jpeg(hw: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(hw)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("method", ["maskcut", "lost"])
def test_a_square_input_is_resized_from_the_full_decode(method):
    data, limits = jpeg((500, 1000)), ImageLimits(10**8, 10**8)
    # A reduced JPEG decode for the 480 px cap would leave the short side at 250 px, under the
    # square it is stretched to, and is not the image the authors resize.
    assert decode(data, "a.jpg", limits, max_side=480).pixels.shape[:2] == (250, 500)
    spec = DiscoverySpec(method=method, square=480)
    assert spec.effective_max_side() is None
    loaded = decode(data, "a.jpg", limits, max_side=spec.effective_max_side())
    assert loaded.pixels.shape[:2] == (500, 1000)
    backbone = SimpleNamespace(patch_size=16)
    assert Discoverer(backbone, spec).max_side is None  # type: ignore[arg-type]
