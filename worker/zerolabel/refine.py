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

At click time (interactive pre-annotation, :mod:`zerolabel.discovery.prompts`) the CRF's
hundreds of milliseconds are too slow: :func:`guided_patch_mask` fits the mask with a colour
guided filter instead (tens of milliseconds at 480 x 640, ``bench/bench_prompts.py``), with the
same frames and conventions; the CRF path is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.ndimage

from zerolabel import geometry
from zerolabel.errors import ConfigError

BoolArray = npt.NDArray[np.bool_]
Pixels = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


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


@dataclass(frozen=True)
class GuidedParams:
    """The guided filter's window, smoothing and resolution, and the agreement a result needs.

    Raises:
        ValueError: a value out of its range (each field says it).
    """

    radius_patches: float = 1.0  # window radius in patches (16 content px for a /16 ViT), (0, 8]
    eps: float = 1e-2  # regularises the colour covariance (RGB in [0, 1]); larger: smoother, > 0
    subsample: int = 4  # coefficients computed at 1 / subsample of the resolution, 1 to 16
    threshold: float = 0.5  # filtered mask value from which a pixel is in the object, (0, 1)
    min_iou: float = 0.5  # a result with a lower IoU with the coarse mask is not used, [0, 1]

    def __post_init__(self) -> None:
        checks = (
            ("radius_patches", 0.0 < self.radius_patches <= 8.0, "in (0, 8]"),
            ("eps", self.eps > 0.0 and np.isfinite(self.eps), "> 0 and finite"),
            ("subsample", isinstance(self.subsample, int) and 1 <= self.subsample <= 16, "1..16"),
            ("threshold", 0.0 < self.threshold < 1.0, "in (0, 1)"),
            ("min_iou", 0.0 <= self.min_iou <= 1.0, "in [0, 1]"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(
                    f"guided filter {name} must be {rule}, got {getattr(self, name)!r}"
                )


GUIDED = GuidedParams()
"""The click-time setting: one patch of radius, coefficients at a quarter of the resolution."""


def guided_mask(
    pixels: Pixels, mask: BoolArray, radius: int, params: GuidedParams = GUIDED
) -> BoolArray | None:
    """A coarse mask fitted to the image's edges by a guided filter; None when it disagrees.

    The guided filter (He, Sun and Tang, ECCV 2010) models the filtered mask as a linear
    function of the image's colour in every window, ``q = a . I + b``, fitted to the coarse
    mask by least squares (``a = (Sigma + eps U)^-1 cov(I, m)``, ``b = mean(m) - a . mean(I)``)
    and averaged over the windows holding each pixel: where the window straddles a colour edge
    the mask's step follows it, in flat regions the mask is smoothed. The coefficients are
    computed on the image and mask averaged over ``subsample`` x ``subsample`` blocks and
    upsampled bilinearly (He and Sun's fast guided filter, 2015); the final ``a . I + b`` is at
    full resolution, so edges stay sharp. Then: ``q >= threshold``, the 4-connected components
    that overlap the coarse mask, holes filled.

    Args:
        pixels: [h, w, 3] uint8 RGB image.
        mask: [h, w] bool coarse mask at the same resolution.
        radius: window radius in pixels (the window is ``2 radius + 1`` wide), >= 1.
        params: the filter's setting.

    Returns:
        [h, w] bool mask, or None when the coarse mask is empty, or the result is empty or has
        an IoU with the coarse mask below ``params.min_iou``.

    Raises:
        ValueError: pixels that are not [h, w, 3] uint8, a mask of another size, a radius < 1.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be [h, w, 3] uint8, got {pixels.shape} {pixels.dtype}")
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"mask {mask.shape} and pixels {pixels.shape[:2]} differ in size")
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer) or radius < 1:
        raise ValueError(f"radius must be an int >= 1 (pixels), got {radius!r}")
    coarse = np.asarray(mask, dtype=bool)
    if not coarse.any():
        return None
    filtered = _guided_filter(pixels, coarse, int(radius), params)
    labels, count = scipy.ndimage.label(filtered >= params.threshold)
    overlapping = np.zeros(count + 1, dtype=bool)
    overlapping[labels[coarse]] = True
    overlapping[0] = False  # label 0: below the threshold
    refined = _filled(overlapping[labels])
    if not refined.any() or geometry.mask_iou(refined, coarse) < params.min_iou:
        return None
    return refined


def guided_patch_mask(
    content_pixels: Pixels,
    patch_mask: BoolArray,
    frame: geometry.Frame,
    params: GuidedParams = GUIDED,
) -> BoolArray:
    """A patch mask fitted to the image's edges at click time, at the original size.

    The fast counterpart of :func:`refine_patch_mask` (tens of milliseconds where the dense
    CRF takes hundreds): :func:`guided_mask` on the resized image the network saw, with a
    window of ``params.radius_patches`` patches, then resized to the original image (nearest,
    by pixel centres). Where the filter gives nothing usable (see :func:`guided_mask`) the
    patch mask itself is returned, upsampled: a click always gets its object.

    Args:
        content_pixels: [ch, cw, 3] uint8, the image as resized for the network
            (:func:`zerolabel.vit.preprocess.resized`).
        patch_mask: [gh, gw] bool mask on the patch grid.
        frame: the geometry of the network input.
        params: the filter's setting.

    Returns:
        [H, W] bool mask at the original size (all False only for an empty patch mask).

    Raises:
        ValueError: pixels that are not the frame's content size, or a patch mask that is
            not the frame's grid.
    """
    if content_pixels.shape[:2] != frame.content_hw:
        raise ValueError(
            f"content pixels {content_pixels.shape[:2]} are not the frame's content size "
            f"{frame.content_hw}: pass the image as resized for the network"
        )
    if np.shape(patch_mask) != frame.grid_hw:
        raise ValueError(
            f"patch mask {np.shape(patch_mask)} is not the frame's grid {frame.grid_hw}"
        )
    radius = max(1, round(params.radius_patches * frame.patch_size))
    refined = guided_mask(content_pixels, patch_to_content(patch_mask, frame), radius, params)
    if refined is None:
        return geometry.patch_mask_to_pixel_mask(np.asarray(patch_mask, dtype=bool), frame)
    return content_to_original(refined, frame)


def _guided_filter(pixels: Pixels, source: BoolArray, radius: int, params: GuidedParams) -> Floats:
    """``a . I + b`` of the colour guided filter of ``source`` by ``pixels`` (RGB in [0, 1])."""
    s = params.subsample
    small_guide = np.moveaxis(_block_mean(pixels, s), 2, 0) / np.float32(255.0)  # [3, hs, ws]
    small_source = _block_mean(source[:, :, None], s)[:, :, 0]
    r = max(1, round(radius / s))
    count = _box_sum(np.ones((1, *small_source.shape), dtype=np.float32), r)[0]
    channels = np.concatenate(
        [
            small_guide,
            small_source[None],
            small_guide * small_source[None],
            small_guide[_PAIRS[0]] * small_guide[_PAIRS[1]],
        ]
    )
    means = _box_sum(channels, r) / count
    mean_i, mean_p, mean_ip, mean_ii = means[:3], means[3], means[4:7], means[7:]
    cov_ip = mean_ip - mean_i * mean_p
    sigma = mean_ii - mean_i[_PAIRS[0]] * mean_i[_PAIRS[1]]
    sigma[[0, 3, 5]] += params.eps  # rr, gg, bb
    a = _solve_symmetric3(sigma, cov_ip)
    b = mean_p - (a * mean_i).sum(axis=0)
    coefficients = _box_sum(np.concatenate([a / np.float32(255.0), b[None]]), r) / count
    h, w = source.shape
    full = _upsampled(_upsampled(coefficients, s, axis=1)[:, :h], s, axis=2)[:, :, :w]
    filtered: Floats = full[3]
    for channel in range(3):  # a . I on the uint8 pixels (a is scaled by 1 / 255)
        filtered += full[channel] * pixels[:, :, channel]
    return filtered


_PAIRS = (np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2, 1, 2, 2]))
"""Channel pairs of the upper triangle of a 3 x 3 colour covariance: rr rg rb gg gb bb."""


def _solve_symmetric3(
    sigma: npt.NDArray[np.float32], rhs: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Per pixel ``Sigma^-1 rhs`` for symmetric 3 x 3 ``Sigma`` (upper triangle rr rg rb gg gb
    bb, [6, h, w]) and ``rhs`` [3, h, w], by the adjugate (``Sigma`` + eps I is positive
    definite)."""
    rr, rg, rb, gg, gb, bb = sigma
    adj_rr, adj_rg, adj_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    adj_gg, adj_gb, adj_bb = rr * bb - rb * rb, rb * rg - rr * gb, rr * gg - rg * rg
    det = rr * adj_rr + rg * adj_rg + rb * adj_rb
    x, y, z = rhs
    solved: npt.NDArray[np.float32] = (
        np.stack(
            [
                adj_rr * x + adj_rg * y + adj_rb * z,
                adj_rg * x + adj_gg * y + adj_gb * z,
                adj_rb * x + adj_gb * y + adj_bb * z,
            ]
        )
        / det
    )
    return solved


def _box_sum(x: npt.NDArray[np.float32], r: int) -> npt.NDArray[np.float32]:
    """Sums over the ``(2 r + 1)``-wide square window around each cell of [k, h, w], the window
    cut at the borders (two running sums, whatever ``r``)."""
    h, w = x.shape[1:]
    rows = np.cumsum(np.pad(x, ((0, 0), (r + 1, r), (0, 0))), axis=1, dtype=np.float32)
    tall = rows[:, 2 * r + 1 :] - rows[:, :h]
    cols = np.cumsum(np.pad(tall, ((0, 0), (0, 0), (r + 1, r))), axis=2, dtype=np.float32)
    summed: npt.NDArray[np.float32] = cols[:, :, 2 * r + 1 :] - cols[:, :, :w]
    return summed


def _block_mean(x: npt.NDArray[Any], s: int) -> Floats:
    """[h, w, k] averaged over s x s blocks as float32, the last partial blocks padded by
    their edge: [ceil(h / s), ceil(w / s), k]."""
    h, w, k = x.shape
    hs, ws = -(-h // s), -(-w // s)
    if (hs * s, ws * s) != (h, w):
        x = np.pad(x, ((0, hs * s - h), (0, ws * s - w), (0, 0)), mode="edge")
    rows = np.zeros((hs, ws * s, k), dtype=np.float32)
    for i in range(s):  # strided slices, not a reduction over a strided axis: far faster
        rows += x[i::s]
    mean = np.zeros((hs, ws, k), dtype=np.float32)
    for j in range(s):
        mean += rows[:, j::s]
    mean /= np.float32(s * s)
    return mean


def _upsampled(x: Floats, s: int, axis: int) -> Floats:
    """``x`` upsampled ``s`` times along ``axis``, bilinear: each value sits at the centre of
    its s cells (no corner alignment), the ends held constant. Offsets repeat with period
    ``s``, so each of them is one pass over shifted slices, no gather."""
    n = x.shape[axis]
    padded = np.concatenate([x.take([0], axis), x, x.take([n - 1], axis)], axis=axis)

    def shifted(start: int) -> Floats:
        index: list[slice] = [slice(None)] * x.ndim
        index[axis] = slice(start, start + n)
        return padded[tuple(index)]

    shape = list(x.shape)
    shape[axis] = n * s
    out = np.empty(shape, dtype=np.float32)
    for k in range(s):
        offset = (k + 0.5) / s - 0.5  # of cell s j + k from the centre of value j, in values
        low, high = (shifted(0), shifted(1)) if offset < 0 else (shifted(1), shifted(2))
        weight = np.float32(offset + 1.0 if offset < 0 else offset)  # of the higher value
        target: list[slice] = [slice(None)] * x.ndim
        target[axis] = slice(k, None, s)
        out[tuple(target)] = low * (np.float32(1.0) - weight) + high * weight
    return out


def _filled(mask: BoolArray) -> BoolArray:
    """``mask`` with its holes filled: background components that do not touch the border."""
    labels, count = scipy.ndimage.label(~mask)
    outside = np.zeros(count + 1, dtype=bool)
    outside[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    outside[0] = False  # label 0: the mask itself
    filled: BoolArray = ~outside[labels]
    return filled
