"""Label Studio output: brush RLE against the sdk's own codec, and the prediction JSON."""

from __future__ import annotations

import json
import time
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from zerolabel.contract import Box, DiscoveryResult, Region, Rle
from zerolabel.geometry import mask_to_box, rle_encode
from zerolabel.labelstudio.brush import (
    brush_rle_decode,
    brush_rle_encode,
    brush_rle_to_rle,
    rle_to_brush_rle,
)
from zerolabel.labelstudio.tasks import Target, prediction, task

from tests.ls_reference import check_ls_task, load_sdk_brush


@pytest.fixture
def sdk() -> ModuleType:
    """The sdk's brush module (``mask2rle``, ``decode_rle``)."""
    return load_sdk_brush()


def _runs_mask(hw: tuple[int, int], runs: list[int]) -> np.ndarray:
    """Row-major mask made of alternating runs (set first), the rest unset."""
    flat = np.zeros(hw[0] * hw[1], dtype=bool)
    pos = 0
    for i, n in enumerate(runs):
        flat[pos : pos + n] = i % 2 == 0
        pos += n
    assert pos <= flat.size
    return flat.reshape(hw)


def _ellipse(
    hw: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    yy, xx = np.ogrid[: hw[0], : hw[1]]
    return ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 < 1


_RNG = np.random.default_rng(7)
# Pixel runs of 1..65 give RGBA runs of 4..260 (every length field); 16384 px = 2**16 values
# (the widest field's limit), 16385 px and 40000 px need two and three long-run pieces.
_ALL_FIELDS = [1, 2, 3, 4, 5, 63, 64, 65, 100, 16383, 16384, 16385, 40000]

MASKS = [
    pytest.param(_RNG.random((40, 60)) < 0.5, id="random"),
    pytest.param(_RNG.random((37, 53)) < 0.3, id="random-37x53"),
    pytest.param(np.zeros((37, 53), dtype=bool), id="empty"),
    pytest.param(np.ones((64, 48), dtype=bool), id="full"),
    pytest.param(np.ones((300, 300), dtype=bool), id="full-long-runs"),
    pytest.param(_runs_mask((1, 1), [1]), id="1x1-set"),
    pytest.param(_runs_mask((9, 7), [0, 31, 1]), id="one-pixel"),
    pytest.param(_runs_mask((5, 3277), [16385]), id="exactly-one-long-piece-more"),
    pytest.param(_runs_mask((311, 433), _ALL_FIELDS), id="all-length-fields"),
    pytest.param(_ellipse((97, 131), (40, 70), (30, 50)), id="ellipse"),
]


@pytest.mark.parametrize("mask", MASKS)
def test_brush_rle_is_byte_identical_to_sdk_mask2rle(mask: np.ndarray, sdk: ModuleType) -> None:
    assert brush_rle_encode(mask) == sdk.mask2rle(mask.astype(np.uint8) * 255)


@pytest.mark.parametrize("mask", MASKS)
def test_sdk_decoder_reads_our_brush_rle(mask: np.ndarray, sdk: ModuleType) -> None:
    h, w = mask.shape
    rgba = sdk.decode_rle(brush_rle_encode(mask)).reshape(h, w, 4)
    for channel in range(4):
        np.testing.assert_array_equal(rgba[:, :, channel], np.where(mask, 255, 0))


@pytest.mark.parametrize("mask", MASKS)
def test_our_decoder_inverts_our_encoder(mask: np.ndarray) -> None:
    decoded = brush_rle_decode(brush_rle_encode(mask), mask.shape)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("mask", MASKS)
def test_brush_rle_converts_to_and_from_coco_rle_without_pixels(mask: np.ndarray) -> None:
    brush = brush_rle_encode(mask)
    assert brush_rle_to_rle(brush, mask.shape) == rle_encode(mask)
    assert rle_to_brush_rle(rle_encode(mask)) == brush  # so byte-identical to the sdk too


def test_rle_to_brush_rle_rejects_counts_of_the_wrong_total() -> None:
    with pytest.raises(ValueError, match="expected 3x4"):
        rle_to_brush_rle(Rle((3, 4), [5, 6]))


def test_encoder_output_is_json_ready_bytes() -> None:
    rle = brush_rle_encode(_RNG.random((20, 30)) < 0.5)
    assert all(type(b) is int and 0 <= b <= 255 for b in rle)
    assert json.loads(json.dumps(rle)) == rle


def test_large_mask_encodes_fast_and_round_trips() -> None:
    hw = (3000, 4000)
    mask = _ellipse(hw, (1500, 2000), (1000, 1500)) | _ellipse(hw, (500, 600), (300, 300))
    start = time.perf_counter()
    rle = brush_rle_encode(mask)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"encoding a 4000x3000 mask took {elapsed:.2f} s"
    np.testing.assert_array_equal(brush_rle_decode(rle, hw), mask)


class _BitWriter:
    """Test-side rle-pack writer, so the decoder is checked on streams our encoder never makes."""

    def __init__(self) -> None:
        self.bits: list[str] = []

    def put(self, value: int, nbits: int) -> None:
        assert 0 <= value < 1 << nbits
        self.bits.append(format(value, f"0{nbits}b"))

    def to_bytes(self) -> list[int]:
        s = "".join(self.bits)
        s += "0" * (-len(s) % 8)
        return [int(s[i : i + 8], 2) for i in range(0, len(s), 8)]


def _random_stream(rng: np.random.Generator, num: int, sizes: list[int]) -> list[int]:
    """A valid stream of ``num`` bytes mixing literal and repeat runs of every selector."""
    out = _BitWriter()
    out.put(num, 32)
    out.put(8 - 1, 5)
    for size in sizes:
        out.put(size - 1, 4)
    done = 0
    while done < num:
        selector = int(rng.integers(4))
        n = min(int(rng.integers(1, 1 << sizes[selector], endpoint=True)), num - done, 40)
        repeat = bool(rng.integers(2))
        out.put(int(repeat), 1)
        out.put(selector, 2)
        out.put(n - 1, sizes[selector])
        for _ in range(1 if repeat else n):
            out.put(int(rng.choice([0, 1, 127, 128, 200, 255])), 8)
        done += n
    return out.to_bytes()


@pytest.mark.parametrize("sizes", [[3, 4, 8, 16], [2, 5, 6, 12]], ids=["ls-sizes", "other-sizes"])
@pytest.mark.parametrize("threshold", [0, 127])
def test_decoder_matches_sdk_on_literal_and_repeat_runs(
    sizes: list[int], threshold: int, sdk: ModuleType
) -> None:
    rng = np.random.default_rng(threshold + sizes[0])
    h, w = 23, 29
    for _ in range(5):
        rle = _random_stream(rng, h * w * 4, sizes)
        alpha = sdk.decode_rle(rle).reshape(h, w, 4)[:, :, 3]
        ours = brush_rle_decode(rle, (h, w), threshold=threshold)
        np.testing.assert_array_equal(ours, alpha > threshold)
        assert brush_rle_to_rle(rle, (h, w), threshold=threshold) == rle_encode(alpha > threshold)


def test_decoder_rejects_wrong_size_and_truncated_streams() -> None:
    mask = _RNG.random((12, 10)) < 0.5
    rle = brush_rle_encode(mask)
    with pytest.raises(ValueError, match="expected 12x11x4"):
        brush_rle_decode(rle, (12, 11))
    with pytest.raises(ValueError, match="truncated"):
        brush_rle_decode(rle[: len(rle) // 2], (12, 10))
    with pytest.raises(ValueError, match="expected 12x11x4"):
        brush_rle_to_rle(rle, (12, 11))
    with pytest.raises(ValueError, match="truncated"):
        brush_rle_to_rle(rle[: len(rle) // 2], (12, 10))


# --- prediction JSON ---------------------------------------------------------------------

H, W = 200, 400  # a wide image: x and width are over 400, y and height over 200


def _result(model_version: str = "zl-test-1") -> DiscoveryResult:
    mask = _ellipse((H, W), (100, 200), (40, 90))
    box = mask_to_box(mask)
    assert box is not None
    regions = [
        Region(box=box, score=0.9, method="lost", mask=rle_encode(mask)),
        Region(box=Box(300.0, 20.0, 390.0, 60.0), score=0.4, method="lost", label="cat"),
        Region(box=Box(-3.0, 150.0, 410.0, 200.0), score=0.2, method="lost"),  # spills over
    ]
    return DiscoveryResult("a.png", (H, W), regions, model_version=model_version, task_id=3)


def _items(result: DiscoveryResult, target: Target, kind: str) -> list[dict[str, Any]]:
    return [r for r in prediction(result, target)["result"] if r["type"] == kind]


def test_box_percentages_use_width_for_x_and_height_for_y() -> None:
    result = _result()
    boxes = _items(result, Target(), "rectanglelabels")
    assert len(boxes) == len(result.regions)
    for item, region in zip(boxes[:2], result.regions[:2], strict=True):
        v = item["value"]
        back = Box(v["x"] * W / 100, v["y"] * H / 100, 0, 0)
        assert back.x0 == pytest.approx(region.box.x0)
        assert back.y0 == pytest.approx(region.box.y0)
        assert v["width"] * W / 100 == pytest.approx(region.box.width)
        assert v["height"] * H / 100 == pytest.approx(region.box.height)
        assert (item["original_width"], item["original_height"]) == (W, H)
    clipped = boxes[2]["value"]  # the box crossing the image border is cut at it
    assert clipped["x"] == 0 and clipped["width"] == pytest.approx(100)
    assert clipped["y"] + clipped["height"] == pytest.approx(100)


def test_brush_item_decodes_to_the_region_mask_with_the_sdk(sdk: ModuleType) -> None:
    result = _result()
    (brush,) = _items(result, Target(), "brushlabels")
    assert brush["value"]["format"] == "rle"
    rgba = sdk.decode_rle(brush["value"]["rle"]).reshape(H, W, 4)
    expected = _ellipse((H, W), (100, 200), (40, 90))
    np.testing.assert_array_equal(rgba[:, :, 3] > 0, expected)


def test_ids_are_unique_deterministic_and_depend_on_model_version() -> None:
    items = prediction(_result(), Target())["result"]
    ids = [r["id"] for r in items]
    assert len(ids) == len(set(ids)) == 4  # 3 boxes + 1 mask
    assert ids == [r["id"] for r in prediction(_result(), Target())["result"]]
    other = [r["id"] for r in prediction(_result("zl-test-2"), Target())["result"]]
    assert not set(ids) & set(other)
    box_id, mask_id = ids[0], ids[1]  # first region: its box, then its mask
    assert box_id != mask_id and box_id.rsplit("-", 1)[0] == mask_id.rsplit("-", 1)[0]


def test_label_falls_back_to_target_label() -> None:
    target = Target(label="thing")
    boxes = _items(_result(), target, "rectanglelabels")
    assert [b["value"]["rectanglelabels"] for b in boxes] == [["thing"], ["cat"], ["thing"]]
    (brush,) = _items(_result(), target, "brushlabels")
    assert brush["value"]["brushlabels"] == ["thing"]


def test_target_names_and_missing_controls() -> None:
    target = Target(to_name="img", box_from_name="bbox", brush_from_name="seg")
    items = prediction(_result(), target)["result"]
    assert {r["to_name"] for r in items} == {"img"}
    assert {(r["type"], r["from_name"]) for r in items} == {
        ("rectanglelabels", "bbox"),
        ("brushlabels", "seg"),
    }
    only_boxes = prediction(_result(), Target(brush_from_name=None))["result"]
    assert {r["type"] for r in only_boxes} == {"rectanglelabels"}
    only_masks = prediction(_result(), Target(box_from_name=None))["result"]
    assert [r["type"] for r in only_masks] == ["brushlabels"]


def test_mask_of_the_wrong_size_is_rejected() -> None:
    region = Region(Box(0, 0, 2, 2), 0.5, "lost", mask=rle_encode(np.ones((W, H), dtype=bool)))
    result = DiscoveryResult("a.png", (H, W), [region], model_version="v")
    with pytest.raises(ValueError, match="mask is"):
        prediction(result, Target())


def test_prediction_scores() -> None:
    result = _result()
    pred = prediction(result, Target())
    # The task score is the mean region score (DiscoveryResult.task_score): sorting Label
    # Studio's queue by it ascending shows first the tasks most likely to need a fix.
    scores = [r.score for r in result.regions]
    assert pred["score"] == pytest.approx(sum(scores) / len(scores))
    assert pred["model_version"] == result.model_version
    empty = prediction(DiscoveryResult("b.png", (H, W), model_version="v"), Target())
    assert empty == {"model_version": "v", "score": 0.0, "result": []}


def test_task_validates_against_ls_task_format() -> None:
    target = Target(data_key="img_url")
    url = "/data/local-files/?d=set1/a.png"
    made = json.loads(json.dumps(task(_result(), target, url)))  # survives JSON as is
    check_ls_task(made, "img_url")
    assert made["data"] == {"img_url": url}
    assert len(made["predictions"][0]["result"]) == 4
