"""Representer point selection (Song et al., ICCV 2023): one foreground direction per dataset.

Features: the patch tokens the last block outputs, after the final norm, through a ReLU (the
authors' ViT returns ``relu(norm(x))`` of its patch tokens), so every feature is non-negative
and a long feature is a strongly activated one (:func:`features`).

Fit (once per dataset, :mod:`zerolabel.loop.fit_rps`): per image, the mean of the raw features
and the mean of the L2-normalised ones; ``v`` and ``u`` are the means of those over the images
(each image weighs the same); the foreground direction is ``w* = normalize(v - u * |v| / |u|)``:
the norm-weighted mean minus the plain mean, rescaled to the same length, which points at the
features of high norm (objects) and away from the many low-norm background features
(:func:`foreground_direction`). It is a weighted sum of the training features,
``w* = sum_i a_i f_i`` with ``a_i`` proportional to ``1 - s / |f_i|`` (``s = |v| / |u|``): the
representer values, largest for the longest features. Class-wise (the authors' class-specific
parameters): one direction per label, fitted on the images holding that label.

Per image: ``cos(f, w*)`` of every patch, through a ReLU, min-max normalised to [0, 1] (the
map). Two box rules, which the fitted file names (``cells_per_patch``):

- ``1`` (fits of the default preset): the largest 4-connected component of ``map > threshold``
  on the patch grid, like the other methods.
- the patch size (fits of preset ``paper``): the authors' rule. The map is upsampled
  bilinearly (corners aligned) to the input's pixels and quantised to 8 bits (``gray``); the
  object is the largest outer contour of ``gray > int(threshold * max(gray))`` by the area of
  its polygon (OpenCV's ``contourArea`` of ``findContours``), returned as the region the
  contour encloses, on a grid of ``p x p`` cells per patch (:func:`largest_contour_region`).

Threshold: the authors sweep it (0.01 to 0.99, :data:`THRESHOLDS`) on boxes held out for that,
as ``zerolabel rps-fit`` does on a project's accepted boxes; the fitted file keeps the value it
picked (``picked_threshold``). ``-p threshold=`` replaces it; without either it is
:data:`DEFAULT_THRESHOLD`.

Class-wise fits: each direction gives its region; the object is the region of the direction
that scores highest, labelled with its class.

Score: ``(mean cos(f, w*) over the object - mean over the rest) / 2`` in [0, 1] (on the fine
grid, of the cosine upsampled the same way, under the paper rule); no object when no patch
points towards ``w*`` (the map is all zero) or the map is flat.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.ndimage
import torch
import torch.nn.functional as F

from zerolabel.discovery.components import largest_component
from zerolabel.discovery.graph import validate_keys
from zerolabel.discovery.maps import NO_CONTRAST_ATOL, contrast
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked

DEGENERATE_RTOL = 1e-6
"""A direction shorter than this fraction of ``|v|`` is rounding: the features carry no norm
contrast (every feature of one length gives ``v`` parallel to ``u``, ``w* = 0``)."""

DEFAULT_THRESHOLD = 0.5
"""The map threshold when neither the request nor the fitted file gives one."""

THRESHOLDS: tuple[float, ...] = tuple(float(t) for t in np.arange(0.01, 1, 0.01))
"""The thresholds the authors sweep, as the same floats (``numpy.arange(0.01, 1, 0.01)``): the
paper rule truncates ``threshold * 255``, where ``0.01 * 20`` and the 20th of these differ."""

MAX_LABEL_CHARS = 256
"""Longest class name a fitted file may give a region (a project's ``label`` option's bound)."""

MAX_CELLS_PER_PATCH = 32
"""Largest ``cells_per_patch`` a fitted file may ask for (patch sizes are 8, 14 or 16 px)."""

_SQUARE = scipy.ndimage.generate_binary_structure(2, 2)
"""8-connectivity: OpenCV's contours follow diagonal neighbours."""
_CROSS = scipy.ndimage.generate_binary_structure(2, 1)
"""4-connectivity: the background of 8-connected regions."""


def features(tokens: torch.Tensor) -> torch.Tensor:
    """The representer features of an image: ``relu`` of its last-block output tokens.

    Args:
        tokens: [N, E] patch tokens after the final norm (:class:`PatchFeatures.tokens
            <zerolabel.vit.features.PatchFeatures>`).

    Returns:
        [N, E] float32, non-negative.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [N, E], got shape {tuple(tokens.shape)}")
    return tokens.float().clamp(min=0.0)


def foreground_direction(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``normalize(v - u * |v| / |u|)``.

    Args:
        v: [D] mean of the raw patch features of a dataset.
        u: [D] mean of the L2-normalised patch features of the same patches.

    Returns:
        [D] unit vector, float32.

    Raises:
        ValueError: ``u`` is zero, or the difference vanishes (no norm contrast to point at).
    """
    v64, u64 = v.double(), u.double()
    if v64.shape != u64.shape or v64.ndim != 1:
        raise ValueError(f"v and u must be [D] vectors, got {tuple(v.shape)} and {tuple(u.shape)}")
    v_norm, u_norm = v64.norm(), u64.norm()
    if u_norm == 0 or v_norm == 0:
        raise ValueError("the features average to zero: no foreground direction to fit")
    difference = v64 - u64 * (v_norm / u_norm)
    if difference.norm() <= DEGENERATE_RTOL * v_norm:
        raise ValueError(
            "every feature has the same length: representer points need features whose norms "
            "differ (fit on real images with a trained backbone)"
        )
    direction: torch.Tensor = (difference / difference.norm()).float()
    return direction


def activation_maps(feats: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``cos(f, w)`` of every patch for every direction (before the ReLU), float32 [C, N].

    Args:
        feats: [N, E] representer features (:func:`features`).
        directions: [C, E] or [E] fitted directions.

    Raises:
        ValueError: directions of another width than the features.
    """
    rows = directions.reshape(1, -1) if directions.ndim == 1 else directions
    if rows.ndim != 2 or rows.shape[1] != feats.shape[1] or rows.shape[0] == 0:
        raise ValueError(
            f"the fitted direction is {tuple(directions.shape)}, the features are "
            f"{feats.shape[1]}-d: fit it again (zerolabel rps-fit) for this backbone"
        )
    unit = F.normalize(feats.float(), p=2, dim=1)
    return F.normalize(rows.float().to(feats.device), p=2, dim=1) @ unit.T


class ForegroundMap:
    """One direction's map of one image, computed once and cut at any threshold by
    :meth:`region`.

    Args:
        cosine: [N] ``cos(f, w*)`` of the patches before the ReLU, row-major.
        grid_hw: (h, w) of the patch grid.
        cells_per_patch: 1 for the patch-grid rule; the patch size for the paper rule on the
            input's pixels.
    """

    def __init__(self, cosine: torch.Tensor, grid_hw: tuple[int, int], cells_per_patch: int):
        self.cosine = cosine.detach().float().cpu()
        self.grid_hw = grid_hw
        self.cells_per_patch = cells_per_patch
        activation = self.cosine.clamp(min=0.0).reshape(grid_hw)
        low, high = activation.min(), activation.max()
        # flat: every patch has the same activation (none points towards w*): no structure
        self.flat = bool(high - low <= 0)
        # [h, w] float32 map in [0, 1]: ReLU, then min-max
        self.normalised = torch.zeros(grid_hw) if self.flat else (activation - low) / (high - low)
        if cells_per_patch > 1:
            # the paper rule's 8-bit map on the input's pixels (truncated, as numpy's astype)
            fine = upsample(self.normalised, cells_per_patch) * 255
            self.gray = fine.to(torch.uint8).numpy()
            self.fine_cosine = upsample(self.cosine.reshape(grid_hw), cells_per_patch).numpy()

    def region(self, threshold: float) -> tuple[torch.Tensor, float]:
        """The object at ``threshold`` (a cut of the normalised map) and its score in [0, 1];
        score 0: nothing stands out.

        Returns:
            [h c, w c] bool mask on the CPU (c = cells per patch) and its score.
        """
        if self.flat:
            return torch.zeros(self.normalised.shape, dtype=torch.bool), 0.0
        if self.cells_per_patch == 1:
            mask = largest_component(self.normalised > threshold)
            return mask, contrast(self.cosine, mask.flatten(), 2.0)
        cut = int(threshold * int(self.gray.max()))
        mask = largest_contour_region(torch.from_numpy(self.gray > cut))
        return mask, _pixel_contrast(self.fine_cosine, mask.numpy())


def _pixel_contrast(values: npt.NDArray[np.float32], region: npt.NDArray[np.bool_]) -> float:
    """:func:`~zerolabel.discovery.maps.contrast` of cosines (scale 2) on the input's pixels,
    from sums (a mask of every pixel is too many for boolean indexing per threshold)."""
    inside = int(region.sum())
    if inside == 0 or inside == region.size:
        return 0.0
    total, within = float(values.sum(dtype=np.float64)), float(values[region].sum(dtype=np.float64))
    score = (within / inside - (total - within) / (region.size - inside)) / 2.0
    return 0.0 if score <= NO_CONTRAST_ATOL else min(score, 1.0)


def upsample(grid: torch.Tensor, cells: int) -> torch.Tensor:
    """Bilinear upsampling of an [h, w] map to [h c, w c] with aligned corners (the authors')."""
    h, w = grid.shape
    size = (h * cells, w * cells)
    fine = F.interpolate(grid.float()[None, None], size=size, mode="bilinear", align_corners=True)
    return fine[0, 0]


def largest_contour_region(binary: torch.Tensor) -> torch.Tensor:
    """The region enclosed by the largest outer contour of a binary image.

    OpenCV traces the borders of 8-connected regions through the centres of their pixels, and
    the authors keep the contour of largest polygon area. The outer contour of a region encloses
    its holes; its polygon covers, of each 2 x 2 block of pixel centres, all of it when the four
    pixels are inside (holes filled), half when three are, nothing otherwise, which sums to its
    ``contourArea``. Holes are the background cells that cannot reach the image border through
    edge neighbours (the background of 8-connected regions is 4-connected). Contours of holes
    are never the largest: the outer contour around a hole encloses it. On equal areas the
    region whose first pixel comes first in row-major order is kept.

    Args:
        binary: [H, W] bool.

    Returns:
        [H, W] bool, the region with its holes filled; all False when ``binary`` is.
    """
    cells = binary.detach().cpu().numpy().astype(bool)
    labels, count = scipy.ndimage.label(_holes_filled(cells), _SQUARE)
    if count == 0:
        return torch.zeros(cells.shape, dtype=torch.bool)
    areas = _polygon_areas(labels, count)
    best = int(np.argmax(areas)) + 1  # argmax takes the lowest label (first in raster order)
    return torch.from_numpy(labels == best)


def _holes_filled(cells: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``cells`` with every background cell that cannot reach the border through edge
    neighbours set (``scipy.ndimage.binary_fill_holes``, by one labelling pass)."""
    background, count = scipy.ndimage.label(~cells, _CROSS)
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (background[0], background[-1], background[:, 0], background[:, -1]):
        outside[edge] = True
    outside[0] = True  # the cells themselves
    filled: npt.NDArray[np.bool_] = cells | ~outside[background]
    return filled


def _polygon_areas(labels: npt.NDArray[np.int32], count: int) -> npt.NDArray[np.float64]:
    """Polygon area of the outer contour of each label of a hole-filled labelling: [count]."""
    corners = (labels[:-1, :-1], labels[:-1, 1:], labels[1:, :-1], labels[1:, 1:])
    inside = np.add.reduce([(corner > 0).astype(np.uint8) for corner in corners])
    counted = inside >= 3  # fewer inside corners enclose no area
    owner = np.maximum.reduce([corner[counted] for corner in corners])  # 8-neighbours: one label
    weight = np.where(inside[counted] == 4, 1.0, 0.5)
    areas = np.bincount(owner, weights=weight, minlength=count + 1)
    return np.asarray(areas[1:], dtype=np.float64)


def best_region(
    maps: Sequence[ForegroundMap], threshold: float
) -> tuple[torch.Tensor, float, int] | None:
    """The highest-scoring region over the maps of one image (one per direction).

    Returns:
        The mask, its score and the index of its map; None when no map has a region with a
        positive score. On equal scores the first map wins.
    """
    best: tuple[torch.Tensor, float, int] | None = None
    for index, foreground in enumerate(maps):
        mask, score = foreground.region(threshold)
        if score > 0.0 and (best is None or score > best[1]):
            best = (mask, score, index)
    return best


def check_fit_arguments(
    directions: torch.Tensor,
    labels: Sequence[str],
    picked_threshold: float | None,
    cells_per_patch: int,
) -> None:
    """Refuse fitted-file values the method cannot use (they come from a file).

    Raises:
        ValueError: naming the value and what it must be.
    """
    count = 1 if directions.ndim == 1 else directions.shape[0]
    if directions.ndim not in (1, 2) or count < 1:
        raise ValueError(f"the fitted direction must be [E] or [C, E], got {directions.shape}")
    if not isinstance(labels, list | tuple) or not all(
        isinstance(name, str) and 0 < len(name) <= MAX_LABEL_CHARS for name in labels
    ):
        raise ValueError(
            f"the fitted class names must be a list of names of 1 to {MAX_LABEL_CHARS} "
            "characters: fit it again (zerolabel rps-fit)"
        )
    if labels and len(labels) != count:
        raise ValueError(
            f"the fitted file names {len(labels)} classes for {count} directions: "
            "fit it again (zerolabel rps-fit)"
        )
    if count > 1 and not labels:
        raise ValueError(f"the fitted file holds {count} directions but no class names")
    if picked_threshold is not None and (
        isinstance(picked_threshold, bool)
        or not isinstance(picked_threshold, int | float)
        or not 0.0 <= picked_threshold <= 1.0
    ):
        raise ValueError(f"the fitted threshold must lie in [0, 1], got {picked_threshold!r}")
    if (
        isinstance(cells_per_patch, bool)
        or not isinstance(cells_per_patch, int)
        or not 1 <= cells_per_patch <= MAX_CELLS_PER_PATCH
    ):
        raise ValueError(
            f"cells_per_patch must be an int in [1, {MAX_CELLS_PER_PATCH}], got {cells_per_patch!r}"
        )


@checked("rps")
def rps(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    tokens: torch.Tensor,
    direction: torch.Tensor,
    threshold: float = -1.0,
    labels: Sequence[str] = (),
    picked_threshold: float | None = None,
    cells_per_patch: int = 1,
) -> list[ObjectMask]:
    """One object: the best region of the thresholded representer-point map(s).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major (checked, not read).
        grid_hw: (h, w) of the patch grid.
        tokens: [N, E] last-block output patch tokens (the features, through a ReLU).
        direction: [E] the dataset's foreground direction ``w*``, or [C, E] one per class
            (an ``rps`` fitted file).
        threshold: cut of the normalised map in [0, 1]; negative: the fitted file's picked
            threshold, else :data:`DEFAULT_THRESHOLD`.
        labels: the class of each row of a class-wise ``direction`` (fitted file).
        picked_threshold: the threshold rps-fit picked from accepted boxes (fitted file).
        cells_per_patch: the box rule of the fit (fitted file): 1 on the patch grid, the patch
            size for the authors' rule on the input's pixels.

    Returns:
        One object, labelled with its class for a class-wise fit, with an [h, w] bool mask
        (``[h c, w c]`` under the paper rule) on ``keys``' device; or [] (see the score).
    """
    validate_keys(keys, grid_hw)
    if tokens.ndim != 2 or tokens.shape[0] != keys.shape[0]:
        raise ValueError(
            f"tokens must be [N, E] with N = {keys.shape[0]} patches, got {tuple(tokens.shape)}"
        )
    check_fit_arguments(direction, labels, picked_threshold, cells_per_patch)
    if tokens.shape[0] == 0:
        return []
    cut = threshold if threshold >= 0 else picked_threshold
    cut = DEFAULT_THRESHOLD if cut is None else float(cut)
    maps = [
        ForegroundMap(cosine, grid_hw, cells_per_patch)
        for cosine in activation_maps(features(tokens), direction)
    ]
    best = best_region(maps, cut)
    if best is None:
        return []
    mask, score, index = best
    label = labels[index] if labels else None
    return [ObjectMask(mask=mask.to(keys.device), score=score, label=label)]
