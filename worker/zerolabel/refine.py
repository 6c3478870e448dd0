"""Pixel-accurate masks: MaskCut's dense CRF applied to a mask cut on the patch grid.

The discovery methods cut the ViT patch grid, so their masks follow 8 or 16 pixel blocks. A
fully connected CRF (Krähenbühl and Koltun, NIPS 2011, through the ``pydensecrf2`` package)
moves each edge to the nearest colour edge of the image. Everything here is MaskCut's
post-processing (CutLER, Wang et al., 2023):

- two labels, background and object; the unary of each pixel is the negative log of the
  softmax of the logits ``(1 - m, m)`` with ``m`` the coarse mask (0 or 1) at pixel resolution,
  so the coarse mask is a soft prior (0.73 for its own label), not a hard constraint;
- a Gaussian smoothness kernel (``sxy`` 3, compatibility 7) and a bilateral appearance kernel
  (``sxy`` 50, ``srgb`` 5, compatibility 10); 10 mean-field iterations;
- the most probable label per pixel, then holes filled;
- a refined mask that disagrees with the coarse one (IoU below 0.5) is dropped, not kept
  coarse: the CRF found no object edge near the cut.

:func:`refine_mask` works on pixels; :func:`refine_patch_mask` runs it at the resolution the
network saw (the resized image) and maps the result to the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.ndimage

from zerolabel import geometry
from zerolabel.errors import ConfigError

BoolArray = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CrfParams:
    """The dense CRF's kernels, iterations and the agreement a refined mask needs."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 7.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0
    iterations: int = 10
    min_iou: float = 0.5  # a refined mask with a lower IoU with the coarse one is dropped


MASKCUT_CRF = CrfParams()
"""MaskCut's published setting."""


def refine_mask(
    pixels: Pixels, mask: BoolArray, params: CrfParams = MASKCUT_CRF
) -> BoolArray | None:
    """The object's pixels, snapped to the image's edges; None when the CRF disagrees.

    Args:
        pixels: [h, w, 3] uint8 RGB image.
        mask: [h, w] bool coarse mask at the same resolution.
        params: the CRF's setting (MaskCut's by default).

    Returns:
        [h, w] bool refined mask with holes filled, or None when it is empty or its IoU with
        ``mask`` is below ``params.min_iou``.

    Raises:
        ValueError: pixels that are not [h, w, 3] uint8, or a mask of another size.
        ConfigError: the ``pydensecrf2`` package is not installed.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be [h, w, 3] uint8, got {pixels.shape} {pixels.dtype}")
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask {mask.shape} and pixels {pixels.shape[:2]} differ in size")
    coarse = np.asarray(mask, dtype=bool)
    if not coarse.any():
        return None
    marginals = _mean_field(pixels, coarse, params)
    refined: BoolArray = scipy.ndimage.binary_fill_holes(marginals[1] > marginals[0])
    if not refined.any() or geometry.mask_iou(refined, coarse) < params.min_iou:
        return None
    return refined


def unary_energy(mask: BoolArray) -> npt.NDArray[np.float32]:
    """[2, h * w] energies: ``-log softmax(1 - m, m)`` per pixel, background first.

    ``-log softmax`` of two logits is the softplus of their difference.
    """
    m = np.asarray(mask, dtype=np.float64).ravel()
    background = np.logaddexp(0.0, 2.0 * m - 1.0)  # -log(e^(1-m) / (e^(1-m) + e^m))
    foreground = np.logaddexp(0.0, 1.0 - 2.0 * m)
    return np.ascontiguousarray(np.stack([background, foreground]), dtype=np.float32)


def _mean_field(pixels: Pixels, mask: BoolArray, params: CrfParams) -> npt.NDArray[np.float32]:
    """[2, h, w] label marginals after the CRF's mean-field iterations."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise ConfigError(
            "mask refinement needs the pydensecrf2 package: pip install 'zerolabel[worker]' "
            "(a C++ compiler builds it), or switch refinement off (--no-refine)"
        ) from None
    h, w = mask.shape
    crf = dcrf.DenseCRF2D(w, h, 2)
    crf.setUnaryEnergy(unary_energy(mask))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(
        sxy=params.bilateral_sxy,
        srgb=params.bilateral_srgb,
        rgbim=np.require(pixels, requirements=["C", "W"]),  # read-only arrays are refused
        compat=params.bilateral_compat,
    )
    marginals = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return marginals.reshape(2, h, w)


def patch_to_content(patch_mask: BoolArray, frame: geometry.Frame) -> BoolArray:
    """A patch mask upsampled (nearest) to the content pixels the network saw.

    Args:
        patch_mask: [gh, gw] bool mask on the patch grid.
        frame: the geometry of the network input.

    Returns:
        [ch, cw] bool: patch ``(r, c)`` covers content pixels ``[r p, (r + 1) p)`` etc.; the
        zero padding is left out, and a cropped frame's remainder (no patch) is False.
    """
    (ch, cw), p, (gh, gw) = frame.content_hw, frame.patch_size, frame.grid_hw
    rows, cols = np.arange(ch) // p, np.arange(cw) // p
    cells = np.asarray(patch_mask, dtype=bool)
    content: BoolArray = cells[np.minimum(rows, gh - 1)[:, None], np.minimum(cols, gw - 1)]
    return content & (rows < gh)[:, None] & (cols < gw)[None, :]


def content_to_original(mask: BoolArray, frame: geometry.Frame) -> BoolArray:
    """A content-resolution mask at the original size: each pixel reads the one under its centre.

    The same sampling as :func:`zerolabel.geometry.patch_mask_to_pixel_mask`.
    """
    (h, w), (ch, cw) = frame.original_hw, frame.content_hw
    if (h, w) == (ch, cw):
        return mask
    rows = ((np.arange(h) + 0.5) * ch / h).astype(np.int64)
    cols = ((np.arange(w) + 0.5) * cw / w).astype(np.int64)
    original: BoolArray = mask[rows[:, None], cols[None, :]]
    return original


def refine_patch_mask(
    content_pixels: Pixels,
    patch_mask: BoolArray,
    frame: geometry.Frame,
    params: CrfParams = MASKCUT_CRF,
) -> BoolArray | None:
    """Refine a patch mask on the resized image the network saw, at the original size.

    The CRF runs at the content resolution, as MaskCut's authors run it on their 480 x 480
    input: its kernel widths are in those pixels, and its cost grows with their number. The
    refined mask is then resized to the original image (nearest, by pixel centres).

    Args:
        content_pixels: [ch, cw, 3] uint8, the image as resized for the network
            (:func:`zerolabel.vit.preprocess.resized`).
        patch_mask: [gh, gw] bool mask on the patch grid.
        frame: the geometry of the network input.
        params: the CRF's setting.

    Returns:
        [H, W] bool mask at the original size, or None when the refinement drops it.
    """
    refined = refine_mask(content_pixels, patch_to_content(patch_mask, frame), params)
    return None if refined is None else content_to_original(refined, frame)
