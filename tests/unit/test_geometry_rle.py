"""COCO run-length encodings of zerolabel.geometry against pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from zerolabel.contract import Rle
from zerolabel.geometry import rle_area, rle_decode, rle_encode, rle_to_coco_string

_RNG = np.random.default_rng(11)


def _column_runs(hw: tuple[int, int], runs: list[int]) -> np.ndarray:
    """Mask whose column-major pixels follow alternating runs (unset first), rest unset."""
    flat = np.zeros(hw[0] * hw[1], dtype=bool)
    pos = 0
    for i, n in enumerate(runs):
        flat[pos : pos + n] = i % 2 == 1
        pos += n
    return flat.reshape(hw, order="F")


MASKS = [
    pytest.param(_RNG.random((40, 60)) < 0.5, id="random"),
    pytest.param(_RNG.random((37, 53)) < 0.05, id="sparse-37x53"),
    pytest.param(np.zeros((37, 53), dtype=bool), id="empty"),
    pytest.param(np.ones((20, 30), dtype=bool), id="full"),
    pytest.param(_column_runs((9, 7), [20, 1]), id="one-pixel"),
    pytest.param(_column_runs((1, 1), [0, 1]), id="1x1-set"),
    pytest.param(_column_runs((6, 5), [0, 3, 2]), id="starts-set"),
    # long then short runs: large negative deltas and multi-group counts
    pytest.param(_column_runs((300, 200), [50000, 3, 1, 9000, 7, 200, 1]), id="deltas"),
]


@pytest.mark.parametrize("mask", MASKS)
def test_coco_string_equals_pycocotools(mask: np.ndarray) -> None:
    expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle_to_coco_string(rle_encode(mask)) == expected["counts"].decode()
    assert list(expected["size"]) == list(mask.shape)


@pytest.mark.parametrize("mask", MASKS)
def test_uncompressed_counts_are_cocos(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    h, w = mask.shape
    compressed = mask_utils.frPyObjects(rle.to_dict(), h, w)
    np.testing.assert_array_equal(mask_utils.decode(compressed), mask)
    assert rle_area(rle) == int(mask.sum()) == int(mask_utils.area(compressed))


@pytest.mark.parametrize("mask", MASKS)
def test_rle_round_trip(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    assert rle.size_hw == mask.shape
    assert sum(rle.counts) == mask.size
    assert all(c > 0 for c in rle.counts[1:])  # only the first run may be empty
    decoded = rle_decode(rle)
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)
    assert Rle.from_dict(rle.to_dict()) == rle


def test_decode_rejects_counts_of_the_wrong_total() -> None:
    with pytest.raises(ValueError, match="expected 3x4"):
        rle_decode(Rle((3, 4), [5, 6]))
