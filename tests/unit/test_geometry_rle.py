"""COCO run-length encodings of zerolabel.geometry against pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from zerolabel.contract import Rle
from zerolabel.geometry import (
    mask_to_box,
    rle_area,
    rle_box,
    rle_decode,
    rle_encode,
    rle_from_runs,
    rle_runs,
    rle_to_coco_string,
    transpose_runs,
)

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


def _row_major_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the set runs of the mask flattened row by row."""
    edges = np.flatnonzero(np.diff(mask.ravel().astype(np.int8), prepend=0, append=0))
    return edges[0::2], edges[1::2]


@pytest.mark.parametrize("mask", MASKS)
def test_set_runs_of_an_rle_rebuild_it(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    starts, ends = rle_runs(rle)
    assert int((ends - starts).sum()) == int(mask.sum())
    assert rle_from_runs(starts, ends, mask.shape) == rle


@pytest.mark.parametrize("mask", MASKS)
def test_transposed_row_runs_are_the_column_major_runs(mask: np.ndarray) -> None:
    row_starts, row_ends = _row_major_runs(mask)
    starts, ends = transpose_runs(row_starts, row_ends, mask.shape)
    assert rle_from_runs(starts, ends, mask.shape) == rle_encode(mask)
    back_starts, back_ends = transpose_runs(starts, ends, mask.shape[::-1])
    np.testing.assert_array_equal(back_starts, row_starts)
    np.testing.assert_array_equal(back_ends, row_ends)


def test_transpose_runs_matches_the_pixels_on_many_small_masks() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 9, size=2))
        mask = rng.random((h, w)) < rng.random()
        starts, ends = transpose_runs(*_row_major_runs(mask), (h, w))
        assert rle_from_runs(starts, ends, (h, w)) == rle_encode(mask), mask


@pytest.mark.parametrize("mask", MASKS)
def test_box_of_an_rle_is_the_tight_box_of_its_pixels(mask: np.ndarray) -> None:
    assert rle_box(rle_encode(mask)) == mask_to_box(mask)


def test_run_helpers_reject_counts_of_the_wrong_total() -> None:
    with pytest.raises(ValueError, match="expected 3x4"):
        rle_runs(Rle((3, 4), [5, 6]))
    with pytest.raises(ValueError, match="past 3x4"):
        rle_from_runs(np.array([2]), np.array([13]), (3, 4))


def test_coco_string_equals_pycocotools_on_long_and_uneven_runs() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        counts = [int(c) for c in rng.integers(1, 1 << int(rng.integers(1, 24)), size=9)]
        h = 7
        counts[-1] += -sum(counts) % h  # whole columns
        rle = Rle((h, sum(counts) // h), counts)
        expected = mask_utils.frPyObjects(rle.to_dict(), *rle.size_hw)
        assert rle_to_coco_string(rle) == expected["counts"].decode()
