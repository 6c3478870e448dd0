"""Dense-CRF refinement (zerolabel.refine): coarse patch masks snap to the image's edges."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from zerolabel import refine
from zerolabel.geometry import Frame, mask_iou

H = W = 128
PATCH = 16


def textured(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A bright textured object (``truth``) on a dark textured background, uint8 RGB."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (*truth.shape, 3)).astype(np.uint8)
    pixels[truth] = rng.integers(190, 250, (int(truth.sum()), 3))
    return pixels


def rectangle() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy >= 37) & (yy < 91) & (xx >= 29) & (xx < 101)  # no edge on the 16 px grid


def disk() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy + 0.5 - 61.3) ** 2 + (xx + 0.5 - 66.7) ** 2 < 30.5**2


def block_mask(truth: np.ndarray) -> np.ndarray:
    """The patch-grid mask a method gives at best: cells more than half covered, in pixels."""
    cells = truth.reshape(H // PATCH, PATCH, W // PATCH, PATCH).mean(axis=(1, 3)) > 0.5
    return np.kron(cells, np.ones((PATCH, PATCH), dtype=bool)).astype(bool)


def boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~scipy.ndimage.binary_erosion(mask)


def boundary_error(mask: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean distance (px) from the mask's boundary pixels to the true boundary, and the
    symmetric difference per true boundary pixel (px)."""
    to_truth = scipy.ndimage.distance_transform_edt(~boundary(truth))
    mean_distance = float(to_truth[boundary(mask)].mean())
    return mean_distance, float((mask ^ truth).sum() / boundary(truth).sum())


@pytest.mark.parametrize("shape", [rectangle, disk])
def test_a_block_mask_snaps_to_the_true_edge(shape):
    truth = shape()
    coarse = block_mask(truth)
    assert min(boundary_error(coarse, truth)) > 2.0  # the grid is off by several pixels
    refined = refine.refine_mask(textured(truth), coarse)
    assert refined is not None
    distance, area_per_edge = boundary_error(refined, truth)
    assert distance < 2.0 and area_per_edge < 2.0


def test_read_only_pixels_are_refined_like_writable_ones():
    truth = rectangle()
    pixels = textured(truth)
    frozen = pixels.copy()
    frozen.setflags(write=False)  # what PIL's np.asarray gives
    refined = refine.refine_mask(frozen, block_mask(truth))
    assert refined is not None and np.array_equal(
        refined, refine.refine_mask(pixels, block_mask(truth))
    )


def test_a_mask_the_crf_disagrees_with_is_dropped():
    truth = rectangle()
    pixels = textured(truth)
    near = truth.copy()
    near[29:99, 21:109] = True  # 8 px too large all round: the CRF shrinks it to the object
    assert 0.5 < mask_iou(truth, near)
    assert np.array_equal(refine.refine_mask(pixels, near), truth)
    far = truth.copy()
    far[21:107, 13:117] = True  # 16 px too large: the refined mask is the object again...
    kept = refine.refine_mask(pixels, far, refine.CrfParams(min_iou=0.0))
    assert np.array_equal(kept, truth) and mask_iou(kept, far) < 0.5
    assert refine.refine_mask(pixels, far) is None  # ...too far from the cut: MaskCut drops it


def test_holes_are_filled():
    truth = rectangle()
    hole = np.zeros_like(truth)
    hole[56:72, 56:72] = True
    pixels = textured(truth & ~hole)  # a dark hole inside the bright object
    coarse = block_mask(truth)
    marginals = refine._mean_field(pixels, coarse, refine.MASKCUT_CRF)
    assert (marginals[0] > marginals[1])[hole].all()  # the CRF itself labels the hole background
    refined = refine.refine_mask(pixels, coarse)
    assert refined is not None and refined[hole].all()


def test_an_empty_mask_is_dropped_and_bad_inputs_are_refused():
    pixels = textured(rectangle())
    assert refine.refine_mask(pixels, np.zeros((H, W), dtype=bool)) is None
    with pytest.raises(ValueError, match="differ in size"):
        refine.refine_mask(pixels, np.ones((H, W + 1), dtype=bool))
    with pytest.raises(ValueError, match="uint8"):
        refine.refine_mask(pixels.astype(np.float32), np.ones((H, W), dtype=bool))


def test_the_unary_is_the_negative_log_softmax_of_the_authors_logits():
    mask = np.array([[True, False], [False, True]])
    m = torch.from_numpy(mask.astype(np.float64)).flatten()
    expected = -torch.log_softmax(torch.stack([1 - m, m]), dim=0)  # background first
    assert np.allclose(refine.unary_energy(mask), expected.numpy(), atol=1e-6)


def test_patch_masks_map_to_content_pixels_and_back_to_the_original():
    frame = Frame(original_hw=(60, 90), content_hw=(40, 60), patch_size=16)  # grid 3 x 4
    cells = np.zeros(frame.grid_hw, dtype=bool)
    cells[2, 3] = True  # the corner cell, partly padding
    content = refine.patch_to_content(cells, frame)
    assert content.shape == (40, 60) and content.sum() == 8 * 12
    assert content[32:, 48:].all()
    original = refine.content_to_original(content, frame)
    assert original.shape == (60, 90) and original[48:, 72:].all() and original.sum() == 12 * 18


def test_refine_patch_mask_runs_at_the_content_size_and_returns_the_original_size():
    truth = rectangle()
    pixels = textured(truth)
    cells = block_mask(truth)[::PATCH, ::PATCH]
    frame = Frame(original_hw=(2 * H, 2 * W), content_hw=(H, W), patch_size=PATCH)
    refined = refine.refine_patch_mask(pixels, cells, frame)
    expected = refine.refine_mask(pixels, block_mask(truth))
    assert refined is not None and expected is not None
    assert np.array_equal(refined, np.kron(expected, np.ones((2, 2), dtype=bool)))
