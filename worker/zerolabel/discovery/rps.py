"""Representer point selection (Song et al., ICCV 2023): one foreground direction per dataset.

Fit (once per dataset, ``zerolabel rps-fit``): over all patches of the dataset, ``v`` = mean of
the raw features and ``u`` = mean of the L2-normalised features; the foreground direction is
``w* = normalize(v - u * |v| / |u|)``: the norm-weighted mean minus the plain mean, rescaled to
the same length, which points at the features of high norm (objects) and away from the many
low-norm background features (:func:`foreground_direction`).

Per image: ``map = relu(cos(f, w*))``, min-max normalised to [0, 1]; the object is the largest
4-connected component of ``map > threshold``.

The features are the last block's keys the pipeline gives every method (the authors use the
final tokens after a ReLU); fit and prediction see the same ones. The authors pick the map
threshold per dataset on held-out boxes (a sweep over 0.01-0.99, the weakly-supervised
localization protocol), so no single value is published; 0.5 is this product's default
(``-p threshold=``). Their box is the bounding rectangle of the largest contour of the
thresholded map upsampled to pixels; here the component is taken on the patch grid, like the
other methods.

Score: ``(mean cos(f, w*) over the object - mean over the other patches) / 2`` in [0, 1]; no
object when no patch points towards ``w*`` (the map is all zero) or the map is flat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zerolabel.discovery.components import largest_component
from zerolabel.discovery.graph import validate_keys
from zerolabel.discovery.maps import contrast
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked

DEGENERATE_RTOL = 1e-6
"""A direction shorter than this fraction of ``|v|`` is rounding: the features carry no norm
contrast (every feature of one length gives ``v`` parallel to ``u``, ``w* = 0``)."""


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


def activation_map(keys: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``cos(f, w*)`` of every patch (before the ReLU), float32 [N]."""
    if direction.shape != (keys.shape[1],):
        raise ValueError(
            f"the fitted direction is {tuple(direction.shape)}, the keys are "
            f"{keys.shape[1]}-d: fit it again (zerolabel rps-fit) for this backbone"
        )
    unit = F.normalize(keys.float(), p=2, dim=1)
    return unit @ F.normalize(direction.float().to(keys.device), p=2, dim=0)


@checked("rps")
def rps(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    *,
    direction: torch.Tensor,
    threshold: float = 0.5,
) -> list[ObjectMask]:
    """One object: the largest component of the thresholded representer-point map.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        direction: [D] the dataset's foreground direction ``w*`` (an ``rps`` fitted file).
        threshold: cut on the min-max normalised map, in [0, 1].

    Returns:
        One object with an [h, w] bool mask on ``keys``' device, or [] (see the score).
    """
    validate_keys(keys, grid_hw)
    if keys.shape[0] == 0:
        return []
    cosine = activation_map(keys, direction)
    activation = cosine.clamp(min=0.0)
    low, high = activation.min(), activation.max()
    if high - low <= 0:
        return []
    normalised = (activation - low) / (high - low)
    component = largest_component((normalised > threshold).reshape(grid_hw))
    score = contrast(cosine, component.flatten(), 2.0)
    return [ObjectMask(mask=component, score=score)] if score > 0.0 else []
