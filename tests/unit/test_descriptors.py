from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import zerolabel.vit.descriptors as descriptors
from PIL import Image
from zerolabel.contract import Box
from zerolabel.io.images import LoadedImage
from zerolabel.vit.backbone import Backbone, load_backbone
from zerolabel.vit.descriptors import DescriptorCache, crop_descriptor, resized_hw


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return load_backbone(
        "vit_small_patch16_224", device="cpu", random_weights=True, model_kwargs={"depth": 2}
    )


class ExtractSpy:
    """Wraps ``features.extract`` as called by the descriptors module; records its inputs."""

    def __init__(self, real):
        self.real = real
        self.inputs: list[torch.Tensor] = []

    def __call__(self, backbone, images):
        self.inputs.append(images.clone())
        return self.real(backbone, images)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(x.shape) for x in self.inputs]


@pytest.fixture
def spy(monkeypatch) -> ExtractSpy:
    wrapper = ExtractSpy(descriptors.extract)
    monkeypatch.setattr(descriptors, "extract", wrapper)
    return wrapper


def make_image(pixels: np.ndarray, original_hw: tuple[int, int] | None = None) -> LoadedImage:
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    return LoadedImage("test.png", pixels, original_hw or pixels.shape[:2], digest)


def noise(hw: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_same_object_in_two_images_gives_the_same_descriptor(backbone):
    patch = noise((40, 56), seed=1)
    first = noise((120, 160), seed=2)
    second = np.full((100, 220, 3), 90, dtype=np.uint8)
    first[10:50, 20:76] = patch
    second[50:90, 130:186] = patch
    a = crop_descriptor(backbone, make_image(first), [Box(20, 10, 76, 50)])
    b = crop_descriptor(backbone, make_image(second), [Box(130, 50, 186, 90)])
    assert a.shape == (1, backbone.model.num_features) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    other = crop_descriptor(backbone, make_image(first), [Box(0, 60, 56, 100)])
    assert not np.allclose(a, other, atol=1e-3)  # the descriptor depends on the crop


@pytest.mark.parametrize(
    ("box", "content_hw", "input_hw"),
    [
        pytest.param(Box(10, 20, 80, 50), (256, 597), (256, 608), id="wide"),
        pytest.param(Box(5, 5, 37, 69), (512, 256), (512, 256), id="tall"),
        pytest.param(Box(0, 0, 300, 300), (256, 256), (256, 256), id="shrunk"),
    ],
)
def test_crop_is_resized_so_the_shorter_side_is_256(backbone, spy, box, content_hw, input_hw):
    image = make_image(noise((300, 300), seed=3))
    crop_descriptor(backbone, image, [box])
    assert spy.shapes == [(1, 3, *input_hw)]
    fed = spy.inputs[0][0]
    h, w = content_hw
    assert torch.all(fed[:, h:, :] == 0) and torch.all(fed[:, :, w:] == 0)  # zero padding
    assert torch.all(fed[:, :h, :w].abs().amax(dim=(0, 1)) > 0)  # content reaches column w-1
    assert torch.all(fed[:, :h, :w].abs().amax(dim=(0, 2)) > 0)  # and row h-1


def test_very_elongated_crops_are_capped():
    assert resized_hw((10, 400)) == (51, 2048)
    assert resized_hw((10, 400), max_side=None) == (256, 10240)
    assert resized_hw((20, 30), short_side=64) == (64, 96)


@pytest.mark.parametrize(
    ("pixels_hw", "box", "mapped"),
    [
        pytest.param((100, 120), Box(40, 60, 120, 140), Box(20, 30, 60, 70), id="half"),
        pytest.param((100, 80), Box(30, 40, 150, 120), Box(10, 20, 50, 60), id="per-axis"),
    ],
)
def test_boxes_are_mapped_into_a_reduced_decode(backbone, pixels_hw, box, mapped):
    original = noise((200, 240), seed=4)
    small = np.asarray(Image.fromarray(original).resize(pixels_hw[::-1], Image.Resampling.BOX))
    reduced = make_image(small, original_hw=(200, 240))
    native = make_image(small)  # the same pixels, declared at their own size
    got = crop_descriptor(backbone, reduced, [box])
    np.testing.assert_allclose(got, crop_descriptor(backbone, native, [mapped]), atol=1e-6)
    assert not np.allclose(got, crop_descriptor(backbone, native, [box]), atol=1e-3)


@pytest.mark.parametrize(
    ("image_hw", "original_hw", "box", "message"),
    [
        pytest.param((60, 60), None, Box(10, 10, 10.5, 30), "under one pixel", id="thin"),
        pytest.param((60, 60), None, Box(10, 30, 20, 30), "under one pixel", id="flat"),
        pytest.param((60, 60), (240, 240), Box(10, 10, 13, 40), "under one pixel", id="reduced"),
        pytest.param((60, 60), None, Box(70, 10, 90, 30), "outside", id="outside"),
    ],
)
def test_degenerate_boxes_raise_before_running_the_model(
    backbone, spy, image_hw, original_hw, box, message
):
    image = make_image(noise(image_hw, seed=5), original_hw)
    with pytest.raises(ValueError, match=message):
        crop_descriptor(backbone, image, [Box(0, 0, 30, 30), box])
    assert spy.inputs == []


def test_no_boxes_give_an_empty_matrix(backbone):
    empty = crop_descriptor(backbone, make_image(noise((40, 40), seed=6)), [])
    assert empty.shape == (0, backbone.model.num_features)


def test_cache_returns_identical_arrays_without_running_the_model_again(backbone, spy, tmp_path):
    image = make_image(noise((80, 100), seed=7))
    boxes = [Box(0, 0, 40, 30), Box(30.2, 20.4, 90.1, 70.0)]
    cache = DescriptorCache(tmp_path)
    first = cache.get_or_compute(backbone, image, boxes)
    assert len(spy.inputs) == 2
    again = DescriptorCache(tmp_path).get_or_compute(backbone, image, boxes[::-1])
    assert len(spy.inputs) == 2
    np.testing.assert_array_equal(again, first[::-1])
    rounded = Box(30, 20, 90, 70)  # the key and the computation both use whole pixels
    np.testing.assert_allclose(first[1], crop_descriptor(backbone, image, [rounded])[0], atol=1e-6)


def test_cache_computes_only_missing_boxes_and_separates_settings(backbone, spy, tmp_path):
    image = make_image(noise((80, 100), seed=8))
    cache = DescriptorCache(tmp_path)
    cache.get_or_compute(backbone, image, [Box(0, 0, 40, 30)])
    both = cache.get_or_compute(backbone, image, [Box(0, 0, 40, 30), Box(50, 40, 100, 80)])
    assert len(spy.inputs) == 2 and both.shape == (2, backbone.model.num_features)
    cache.get_or_compute(backbone, image, [Box(0, 0, 40, 30)], short_side=64)
    assert spy.shapes[-1] == (1, 3, 64, 96)  # another crop size: another entry
    assert len(spy.inputs) == 3


def test_cache_recomputes_an_unreadable_file(backbone, spy, tmp_path, caplog):
    image = make_image(noise((50, 50), seed=9))
    box = Box(5, 5, 45, 45)
    cache = DescriptorCache(tmp_path)
    first = cache.get_or_compute(backbone, image, [box])
    cache.path(backbone, image, box).write_bytes(b"not an array")
    again = cache.get_or_compute(backbone, image, [box])
    assert len(spy.inputs) == 2 and "unreadable" in caplog.text
    np.testing.assert_array_equal(again, first)
    assert not list(tmp_path.rglob("*.tmp"))
