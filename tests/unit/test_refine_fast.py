"""Click-time refinement (zerolabel.refine.guided_patch_mask): a guided filter fits blocky patch
masks to the image's edges; the dense CRF's behaviour is untouched."""

from __future__ import annotations

import numpy as np
import pytest
from zerolabel import refine
from zerolabel.geometry import Frame, mask_iou, patch_mask_to_pixel_mask

PATCH = 16
CONTENT_HW = (96, 128)  # a 6 x 8 patch grid


def shape(kind: str, hw: tuple[int, int] = CONTENT_HW) -> np.ndarray:
    """A sharp-edged object whose edges miss the 16 px grid: a rectangle or a disk."""
    h, w = hw
    yy, xx = (np.mgrid[:h, :w] + 0.5) / np.array([h, w])[:, None, None]
    if kind == "rectangle":
        return (yy >= 0.27) & (yy < 0.74) & (xx >= 0.21) & (xx < 0.77)
    return (yy - 0.49) ** 2 + ((xx - 0.53) * w / h) ** 2 < 0.3**2


def textured(truth: np.ndarray, low: tuple[int, int], high: tuple[int, int]) -> np.ndarray:
    """uint8 RGB: the object's pixels drawn from ``high``, the others from ``low`` (seeded)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(*low, (*truth.shape, 3)).astype(np.uint8)
    pixels[truth] = rng.integers(*high, (int(truth.sum()), 3))
    return pixels


def patch_mask(truth: np.ndarray) -> np.ndarray:
    """The patch mask a method gives at best: patches more than half covered."""
    h, w = truth.shape
    return truth.reshape(h // PATCH, PATCH, w // PATCH, PATCH).mean(axis=(1, 3)) > 0.5


CONTRASTS = {"strong": ((0, 60), (190, 250)), "weak": ((60, 140), (110, 190))}


@pytest.mark.parametrize("kind", ["rectangle", "disk"])
@pytest.mark.parametrize("contrast", sorted(CONTRASTS))
def test_the_refined_mask_fits_the_object_better_than_the_patch_mask(kind, contrast):
    truth = shape(kind)
    pixels = textured(truth, *CONTRASTS[contrast])
    frame = Frame(CONTENT_HW, CONTENT_HW, PATCH)
    cells = patch_mask(truth)
    blocky = patch_mask_to_pixel_mask(cells, frame)
    refined = refine.guided_patch_mask(pixels, cells, frame)
    assert refined.shape == truth.shape and refined.dtype == bool
    assert mask_iou(refined, truth) > mask_iou(blocky, truth)


@pytest.mark.parametrize("kind", ["rectangle", "disk"])
def test_on_a_clear_edge_most_of_the_patch_masks_error_goes(kind):
    truth = shape(kind)
    pixels = textured(truth, *CONTRASTS["strong"])
    frame = Frame(CONTENT_HW, CONTENT_HW, PATCH)
    cells = patch_mask(truth)
    blocky = patch_mask_to_pixel_mask(cells, frame)
    refined = refine.guided_patch_mask(pixels, cells, frame)
    assert 1.0 - mask_iou(refined, truth) < 0.5 * (1.0 - mask_iou(blocky, truth))


def test_the_refined_mask_is_at_the_original_size():
    original_hw = (192, 256)  # the network saw the image at half its size
    truth = shape("disk", original_hw)
    content_truth = shape("disk")
    pixels = textured(content_truth, *CONTRASTS["strong"])
    frame = Frame(original_hw, CONTENT_HW, PATCH)
    cells = patch_mask(content_truth)
    refined = refine.guided_patch_mask(pixels, cells, frame)
    assert refined.shape == original_hw
    assert mask_iou(refined, truth) > mask_iou(patch_mask_to_pixel_mask(cells, frame), truth)


@pytest.mark.parametrize("subsample", [3, 4])
def test_sizes_that_are_no_multiple_of_the_patch_or_the_subsampling_work(subsample):
    content_hw, original_hw = (90, 122), (181, 243)  # the grid pads the content to 96 x 128
    frame = Frame(original_hw, content_hw, PATCH)
    content_truth = shape("disk", content_hw)
    padded = np.zeros(frame.padded_hw, dtype=bool)
    padded[: content_hw[0], : content_hw[1]] = content_truth
    cells = patch_mask(padded)
    pixels = textured(content_truth, *CONTRASTS["strong"])
    refined = refine.guided_patch_mask(
        pixels, cells, frame, refine.GuidedParams(subsample=subsample)
    )
    truth = shape("disk", original_hw)
    assert refined.shape == original_hw
    assert mask_iou(refined, truth) > mask_iou(patch_mask_to_pixel_mask(cells, frame), truth)


def test_read_only_pixels_are_refined_like_writable_ones():
    truth = shape("rectangle")
    pixels = textured(truth, *CONTRASTS["strong"])
    frozen = pixels.copy()
    frozen.setflags(write=False)  # what PIL's np.asarray gives
    frame = Frame(CONTENT_HW, CONTENT_HW, PATCH)
    cells = patch_mask(truth)
    assert np.array_equal(
        refine.guided_patch_mask(frozen, cells, frame),
        refine.guided_patch_mask(pixels, cells, frame),
    )


def test_only_the_pieces_overlapping_the_patch_mask_are_kept():
    truth = shape("disk")  # columns 39 to 96
    other = np.zeros_like(truth)
    other[30:60, 100:106] = True  # a bright strip 3 px away: windows hold both, pass 0.5 on it
    pixels = textured(truth | other, *CONTRASTS["strong"])
    coarse = patch_to_pixels(patch_mask(truth))
    refined = refine.guided_mask(pixels, coarse, radius=PATCH)
    assert refined is not None and not refined[other].any()
    assert mask_iou(refined, truth) > mask_iou(coarse, truth)


def patch_to_pixels(cells: np.ndarray) -> np.ndarray:
    return np.kron(cells, np.ones((PATCH, PATCH), dtype=bool)).astype(bool)


def test_holes_are_filled():
    truth = shape("disk")
    pixels = textured(truth, *CONTRASTS["strong"])
    ring = truth.copy()
    ring[40:56, 56:72] = False
    pixels[40:56, 56:72] = 20  # a dark hole inside the object, as the CRF path fills them
    refined = refine.guided_mask(pixels, patch_to_pixels(patch_mask(truth)), radius=PATCH)
    assert refined is not None and refined[40:56, 56:72].all()


def test_a_filter_result_that_disagrees_falls_back_to_the_patch_mask():
    truth = shape("disk")
    pixels = textured(truth, *CONTRASTS["strong"])
    frame = Frame(CONTENT_HW, CONTENT_HW, PATCH)
    cells = patch_mask(truth)
    strict = refine.GuidedParams(min_iou=1.0)  # any change from the patch mask disagrees
    assert refine.guided_mask(pixels, patch_to_pixels(cells), PATCH, strict) is None
    fallback = refine.guided_patch_mask(pixels, cells, frame, strict)
    assert np.array_equal(fallback, patch_mask_to_pixel_mask(cells, frame))


def test_an_empty_patch_mask_gives_an_empty_mask():
    truth = shape("disk")
    pixels = textured(truth, *CONTRASTS["strong"])
    frame = Frame(CONTENT_HW, CONTENT_HW, PATCH)
    empty = np.zeros(frame.grid_hw, dtype=bool)
    assert not refine.guided_patch_mask(pixels, empty, frame).any()
    assert refine.guided_mask(pixels, np.zeros(CONTENT_HW, dtype=bool), PATCH) is None


@pytest.mark.parametrize("subsample", [1, 2, 3])
def test_every_subsampling_fits_the_edges(subsample):
    truth = shape("disk")
    pixels = textured(truth, *CONTRASTS["strong"])
    params = refine.GuidedParams(subsample=subsample)
    coarse = patch_to_pixels(patch_mask(truth))
    refined = refine.guided_mask(pixels, coarse, PATCH, params)
    assert refined is not None and mask_iou(refined, truth) > mask_iou(coarse, truth)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda px, m: refine.guided_mask(px[..., 0], m, PATCH), "must be", id="gray-pixels"
        ),
        pytest.param(
            lambda px, m: refine.guided_mask(px.astype(np.float32), m, PATCH),
            "uint8",
            id="float-pixels",
        ),
        pytest.param(lambda px, m: refine.guided_mask(px, m[:-1], PATCH), "differ", id="size"),
        pytest.param(lambda px, m: refine.guided_mask(px, m, 0), "radius", id="radius"),
        pytest.param(lambda px, m: refine.guided_mask(px, m, 2.5), "radius", id="float-radius"),
        pytest.param(
            lambda px, m: refine.guided_patch_mask(px[:-1], m[::PATCH, ::PATCH], FRAME),
            "content size",
            id="content",
        ),
        pytest.param(
            lambda px, m: refine.guided_patch_mask(px, m[:-PATCH:PATCH, ::PATCH], FRAME),
            "grid",
            id="grid",
        ),
    ],
)
def test_bad_inputs_are_refused_naming_the_cause(call, message):
    truth = shape("disk")
    with pytest.raises(ValueError, match=message):
        call(textured(truth, *CONTRASTS["strong"]), truth)


FRAME = Frame(CONTENT_HW, CONTENT_HW, PATCH)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("radius_patches", 0.0),
        ("radius_patches", 9.0),
        ("eps", 0.0),
        ("eps", float("inf")),
        ("subsample", 0),
        ("subsample", 17),
        ("subsample", 2.0),
        ("threshold", 1.0),
        ("min_iou", -0.1),
    ],
)
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError, match=f"guided filter {field} must be"):
        refine.GuidedParams(**{field: value})
