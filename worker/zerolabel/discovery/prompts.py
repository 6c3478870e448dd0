"""Objects an annotator points at: clicks and rectangles on the patch grid, no second model.

The batch methods find objects on their own; these functions find the one object an annotator
asks for, from the same last-block attention keys. Prompts are in patch coordinates: a click is
the ``(row, col)`` of the patch under it, a rectangle is ``(row0, col0, row1, col1)`` with
``row0``/``col0`` inclusive and ``row1``/``col1`` exclusive (Python's slice convention: rows
``row0 .. row1 - 1``). Mapping pixels or image fractions to patches is the caller's job.

- **Clicks** grow as ProMerge's seed prompts do: the patches whose keys have a cosine similarity
  above ``tau`` with the clicked patch's key, reduced to the 4-connected component (edge
  neighbours only, ``scipy.ndimage.label``'s default, as ProMerge's authors split their masks)
  that holds the click. Several positive clicks give the union of their regions, so a further
  click adds a part. The clicked patch itself is always in the object, even when no neighbour
  resembles it.
- **Background clicks** (negative) carve out the patches more similar to some negative click
  than to every positive one (and above ``tau``); what stays is the 4-connected component(s)
  holding the positive clicks. A negative click on a patch a positive click also names wins:
  that positive click is dropped (the annotator's latest correction is the negative one).
- **A rectangle** runs TokenCut's normalized cut on the patches inside it only: the cosine graph
  ``W = 1 if S > tau else eps``, its second-smallest generalized eigenvector, the split
  ``v > mean(v)``; then the 4-connected component of the object's side holding its seed. Which
  side is the object (:func:`centred_side`): the authors' rule alone (the side holding
  ``argmax |v|``) keeps the smaller side, which is the margin whenever the object fills most of
  the rectangle, as it does in a rectangle drawn around it. So the side holding three or four
  corners of the rectangle is the background (MaskCut's object-centric prior); when the sides
  hold two corners each (a margin along one or two sides), the object is the side holding more
  of the rectangle's central area; the authors' rule decides only when that ties too. A
  rectangle of one or two patches, or one whose cut finds no structure (``1 - lambda`` = 0:
  its patches are all alike), is returned whole.
- **Clicks and a rectangle together**: the rectangle's object, plus the regions of the positive
  clicks (a click inside the rectangle grows inside it only; one outside grows freely), less
  what the negative clicks carve; the rectangle's cut seed counts as a positive click for the
  carving and for the components kept (a negative click on that seed leaves the largest
  component).

A click on the background returns the background region around it: the functions do not judge
what an object is; the annotator's negative clicks or a rectangle tell them.

Score of every object: the contrast of the object with the rest of the grid, ``(mean inside -
mean outside) / 2`` of each patch's cosine similarity with the object's mean normalised key,
clamped to [0, 1] (:func:`zerolabel.discovery.maps.contrast`): 0 for an object indistinct from
the rest or covering the whole grid, near 1 for an object whose keys point against all others.

Parameters are registered in :data:`zerolabel.methods.PROMPT_METHODS` (checked by
:func:`zerolabel.methods.checked` before a call runs).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from zerolabel.discovery.components import label_stack, largest_component
from zerolabel.discovery.graph import (
    bipartition,
    component_containing,
    cut_score,
    ncut_graph,
    peak_index,
    second_smallest_eigenvector,
    validate_keys,
)
from zerolabel.discovery.maps import contrast
from zerolabel.discovery.maskcut import count_fg_corners
from zerolabel.discovery.objects import ObjectMask
from zerolabel.methods import checked

logger = logging.getLogger(__name__)

Cell = tuple[int, int]
"""(row, col) of a patch on the grid."""

Rect = tuple[int, int, int, int]
"""(row0, col0, row1, col1) of a rectangle of patches: row0, col0 inclusive, row1, col1
exclusive."""

MAX_CLICKS = 1024
"""Clicks one call may take (positive and negative together): bounds the [clicks, N] affinity."""

PromptMethod = Callable[..., ObjectMask | None]
"""Called as ``function(keys, grid_hw, <prompts>, **params)``; None: nothing to return."""


@checked("points")
def object_from_points(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    positives: Sequence[Cell],
    negatives: Sequence[Cell] = (),
    *,
    tau: float = 0.2,
) -> ObjectMask | None:
    """The object under the positive clicks, less what the negative clicks carve out.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        positives: (row, col) of each click on the object, at least one.
        negatives: (row, col) of each click on the background.
        tau: cosine similarity above which a patch joins a click's region (and a negative
            click's carving).

    Returns:
        The object (an [h, w] bool mask on ``keys``' device, scored as the module says), or
        None when every positive click is cancelled by a negative click on its patch.

    Raises:
        ValueError: keys that do not match the grid or are not finite, no positive click, a
            click outside the grid or not a pair of ints, too many clicks.
    """
    if _is_points(positives) and len(positives) == 0:
        raise ValueError("object_from_points needs at least one positive click (row, col)")
    return _prompted(keys, grid_hw, positives, negatives, None, tau=tau, eps=1.0)


@checked("box")
def object_in_box(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    box: Rect,
    *,
    tau: float = 0.2,
    eps: float = 1e-5,
) -> ObjectMask | None:
    """The main object inside a rectangle: TokenCut's cut of the rectangle's patches.

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        box: (row0, col0, row1, col1), row0 and col0 inclusive, row1 and col1 exclusive,
            with 0 <= row0 < row1 <= h and 0 <= col0 < col1 <= w.
        tau: cosine similarity above which two patches are fully connected.
        eps: weight of all other edges (> 0).

    Returns:
        The object, an [h, w] bool mask on ``keys``' device that is False outside the
        rectangle, scored as the module says (never None: a rectangle always holds one).

    Raises:
        ValueError: keys that do not match the grid or are not finite, a rectangle that is
            empty, reversed, outside the grid or not four ints.
    """
    return _prompted(keys, grid_hw, (), (), box, tau=tau, eps=eps)


@checked("prompt")
def object_from_prompt(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    positives: Sequence[Cell] = (),
    negatives: Sequence[Cell] = (),
    box: Rect | None = None,
    *,
    tau: float = 0.2,
    eps: float = 1e-5,
) -> ObjectMask | None:
    """The object of any mix of clicks and one rectangle (see the module for the rules).

    Args:
        keys: [N, D] last-block attention keys, N = h * w, row-major.
        grid_hw: (h, w) of the patch grid.
        positives: (row, col) of each click on the object.
        negatives: (row, col) of each click on the background.
        box: the rectangle (row0, col0, row1, col1) as :func:`object_in_box` takes it, or None.
        tau: cosine similarity threshold of the clicks' regions and of the rectangle's graph.
        eps: weight of the rectangle graph's other edges (> 0).

    Returns:
        The object, or None when nothing positive is left (only negative clicks, or every
        positive click cancelled by a negative one on its patch, and no rectangle) or the
        negative clicks carve out everything.

    Raises:
        ValueError: no click and no rectangle, or any input :func:`object_from_points` and
            :func:`object_in_box` refuse.
    """
    if box is None and all(_is_points(p) and len(p) == 0 for p in (positives, negatives)):
        raise ValueError("a prompt needs a click or a rectangle")
    return _prompted(keys, grid_hw, positives, negatives, box, tau=tau, eps=eps)


FUNCTIONS: dict[str, PromptMethod] = {
    "points": object_from_points,
    "box": object_in_box,
    "prompt": object_from_prompt,
}
"""The function of each prompt method registered in :data:`zerolabel.methods.PROMPT_METHODS`."""


def _prompted(
    keys: torch.Tensor,
    grid_hw: tuple[int, int],
    positives: Sequence[Cell],
    negatives: Sequence[Cell],
    box: Rect | None,
    *,
    tau: float,
    eps: float,
) -> ObjectMask | None:
    """The object of the prompts, all checked here first."""
    validate_keys(keys, grid_hw)
    if not bool(torch.isfinite(keys).all()):
        raise ValueError("keys hold NaN or infinite values; check the features passed in")
    for points, what in ((positives, "positive clicks"), (negatives, "negative clicks")):
        if not _is_points(points):
            raise ValueError(f"{what} must be a sequence of (row, col) pairs, got {points!r}")
    if len(positives) + len(negatives) > MAX_CLICKS:
        raise ValueError(
            f"{len(positives) + len(negatives)} clicks in one call; at most {MAX_CLICKS}"
        )
    pos = [_cell(point, grid_hw, "positive click") for point in positives]
    neg = [_cell(point, grid_hw, "negative click") for point in negatives]
    rect = None if box is None else _rect(box, grid_hw)
    cancelled = set(pos) & set(neg)
    if cancelled:
        logger.debug("positive clicks %s dropped: a negative click names the same patch", cancelled)
        pos = [cell for cell in pos if cell not in cancelled]
    if not pos and rect is None:
        logger.debug("no positive click or rectangle left: nothing to return")
        return None
    unit = F.normalize(keys.detach().float(), p=2, dim=1)
    regions: list[torch.Tensor] = []
    seeds = list(pos)
    within = None
    if rect is not None:
        region, seed = box_object(unit, grid_hw, rect, tau=tau, eps=eps)
        regions.append(region)
        seeds.append(seed)
        within = torch.zeros(grid_hw, dtype=torch.bool, device=unit.device)
        within[rect[0] : rect[2], rect[1] : rect[3]] = True
    if pos:
        regions.extend(grown(unit, grid_hw, pos, tau=tau, within=within))
    mask = torch.stack(regions).any(dim=0)
    if neg:
        mask = carved(unit, grid_hw, mask, [s for s in seeds if s not in neg], neg, tau=tau)
        if not mask.any():
            logger.debug("the negative clicks carved out the whole object")
            return None
    return ObjectMask(mask=mask, score=object_score(unit, mask))


def grown(
    unit: torch.Tensor,
    grid_hw: tuple[int, int],
    seeds: Sequence[Cell],
    *,
    tau: float,
    within: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Each seed's region: the 4-connected component holding it of ``cos(f_seed, f) > tau``.

    Args:
        unit: [N, D] L2-normalised keys.
        grid_hw: (h, w) of the patch grid.
        seeds: (row, col) of each seed.
        tau: similarity threshold.
        within: [h, w] bool region the growth of a seed inside it is kept to (a seed outside
            it grows freely), or None.

    Returns:
        One [h, w] bool mask per seed, on ``unit``'s device, each holding its seed.
    """
    h, w = grid_hw
    index = torch.tensor([r * w + c for r, c in seeds], device=unit.device)
    masks = (unit[index] @ unit.T > tau).reshape(-1, h, w)
    rows = torch.tensor([r for r, _ in seeds], device=unit.device)
    cols = torch.tensor([c for _, c in seeds], device=unit.device)
    if within is not None:
        bounded = within[rows, cols]  # [S] seeds inside the region
        masks = masks & (within | ~bounded[:, None, None])
    masks[torch.arange(len(seeds), device=unit.device), rows, cols] = True  # a lone patch too
    labels, _ = label_stack(masks)
    seed_labels = labels[torch.arange(len(seeds)), rows.cpu(), cols.cpu()]
    return list((labels == seed_labels[:, None, None]).to(unit.device).unbind(0))


def carved(
    unit: torch.Tensor,
    grid_hw: tuple[int, int],
    mask: torch.Tensor,
    positives: Sequence[Cell],
    negatives: Sequence[Cell],
    *,
    tau: float,
) -> torch.Tensor:
    """``mask`` less the patches closer to a negative click than to every positive one.

    A patch is carved out when its largest similarity with a negative click exceeds both
    ``tau`` and its largest similarity with a positive click; the negative clicks' own patches
    are carved out too. The 4-connected components of what is left that hold a positive click
    are kept; without a positive click (a rectangle whose cut seed was clicked negative), the
    largest one.

    Args:
        unit: [N, D] L2-normalised keys.
        grid_hw: (h, w) of the patch grid.
        mask: [h, w] bool object before carving.
        positives: (row, col) of the positive clicks, none of them a negative click's patch;
            may be empty.
        negatives: (row, col) of the negative clicks, at least one.
        tau: similarity threshold.

    Returns:
        [h, w] bool on ``mask``'s device, holding every positive click; empty when the
        negative clicks carve out everything.
    """
    w = grid_hw[1]
    pos = torch.tensor([r * w + c for r, c in positives], dtype=torch.long, device=unit.device)
    neg = torch.tensor([r * w + c for r, c in negatives], dtype=torch.long, device=unit.device)
    to_neg = (unit[neg] @ unit.T).amax(dim=0)
    carve = to_neg > tau
    if positives:
        carve &= to_neg > (unit[pos] @ unit.T).amax(dim=0)
    carve[neg] = True
    carve[pos] = False
    left = mask & ~carve.reshape(grid_hw)
    if not positives:
        return largest_component(left)
    kept = torch.zeros_like(left)
    for cell in positives:
        if not kept[cell]:
            kept |= component_containing(left, cell)
    return kept


def box_object(
    unit: torch.Tensor, grid_hw: tuple[int, int], rect: Rect, *, tau: float, eps: float
) -> tuple[torch.Tensor, Cell]:
    """TokenCut's object of the patches inside ``rect``, oriented by its corners.

    Args:
        unit: [N, D] L2-normalised keys.
        grid_hw: (h, w) of the patch grid.
        rect: (row0, col0, row1, col1), checked.
        tau: similarity threshold of the graph.
        eps: weight of the graph's other edges.

    Returns:
        [h, w] bool mask (False outside ``rect``) on ``unit``'s device, and the cut's seed
        (row, col) in grid coordinates (the rectangle's first patch when it is returned whole).
    """
    row0, col0, row1, col1 = rect
    box_hw = (row1 - row0, col1 - col0)
    cells = unit.reshape(*grid_hw, -1)[row0:row1, col0:col1].reshape(box_hw[0] * box_hw[1], -1)
    mask = torch.zeros(grid_hw, dtype=torch.bool, device=unit.device)
    region = torch.ones(box_hw, dtype=torch.bool, device=unit.device)
    seed = (0, 0)
    if cells.shape[0] > 2:
        v, eigenvalue = second_smallest_eigenvector(ncut_graph(cells, tau, eps))
        if cut_score(eigenvalue) > 0.0:  # else no structure: every patch alike, keep them all
            foreground, peak = centred_side(v, box_hw)
            seed = divmod(peak, box_hw[1])
            region = component_containing(foreground.reshape(box_hw), seed)
    mask[row0:row1, col0:col1] = region
    return mask, (row0 + seed[0], col0 + seed[1])


def central_area(box_hw: tuple[int, int]) -> torch.Tensor:
    """[h * w] bool: the middle half of a rectangle along each side (at least one cell).

    Args:
        box_hw: (h, w) of the rectangle in patches.
    """
    h, w = box_hw
    area = torch.zeros(box_hw, dtype=torch.bool)
    area[h // 4 : max(h - h // 4, h // 4 + 1), w // 4 : max(w - w // 4, w // 4 + 1)] = True
    return area.flatten()


def centred_side(v: torch.Tensor, box_hw: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """The object's side of the cut ``v > mean(v)`` of a rectangle's patches, and its seed.

    The side holding three or four corners of the rectangle is the background (MaskCut's
    prior); when each side holds two (a margin along one or two sides of the rectangle), the
    object is the side holding more of the rectangle's central area (:func:`central_area`);
    when that ties too, TokenCut's rule: the side holding ``argmax |v|``. The seed is the
    object's patch of largest ``|v|`` within the central area (anywhere on the side when none
    of it is central); ties of ``|v|`` are broken as
    :func:`~zerolabel.discovery.graph.peak_index` breaks them.

    Args:
        v: [N] eigenvector of the rectangle's patches, row-major over ``box_hw``.
        box_hw: (h, w) of the rectangle in patches.

    Returns:
        [N] bool object side and the seed's index in the rectangle.
    """
    foreground, peak = bipartition(v)  # TokenCut's rule
    centre = central_area(box_hw).to(v.device)
    corners = count_fg_corners(foreground, box_hw)
    if corners == 2:
        held, other = int((foreground & centre).sum()), int((~foreground & centre).sum())
        if held == other:
            return foreground, peak
        side = foreground if held > other else ~foreground
    else:
        side = ~foreground if corners > 2 else foreground
    candidates = torch.nonzero(side & centre)[:, 0]
    if candidates.numel() == 0:
        candidates = torch.nonzero(side)[:, 0]
    return side, int(candidates[peak_index(v.abs()[candidates])])


def object_score(unit: torch.Tensor, mask: torch.Tensor) -> float:
    """Contrast of the object with the rest: each patch's cosine with the object's mean
    normalised key, ``(mean inside - mean outside) / 2`` clamped to [0, 1].

    Args:
        unit: [N, D] L2-normalised keys.
        mask: [h, w] bool object, not empty.
    """
    region = mask.flatten().to(unit.device)
    prototype = F.normalize(unit[region].mean(dim=0), p=2, dim=0)
    return contrast(unit @ prototype, region, scale=2.0)


def _is_points(points: object) -> bool:
    """Whether ``points`` is a sequence that may hold (row, col) pairs (not a string)."""
    return isinstance(points, Sequence) and not isinstance(points, str | bytes)


def _cell(point: object, grid_hw: tuple[int, int], what: str) -> Cell:
    """``point`` as a (row, col) pair of ints on the grid.

    Raises:
        ValueError: not a pair of ints, or outside the grid.
    """
    row, col = _ints(point, 2, f"a {what} must be a (row, col) pair of ints")
    h, w = grid_hw
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(
            f"{what} ({row}, {col}) lies outside the {h} x {w} patch grid "
            f"(rows 0..{h - 1}, columns 0..{w - 1})"
        )
    return row, col


def _rect(box: object, grid_hw: tuple[int, int]) -> Rect:
    """``box`` as a checked (row0, col0, row1, col1).

    Raises:
        ValueError: not four ints, empty or reversed, or reaching outside the grid.
    """
    row0, col0, row1, col1 = _ints(
        box, 4, "a rectangle must be (row0, col0, row1, col1) ints, the ends exclusive"
    )
    h, w = grid_hw
    if row0 >= row1 or col0 >= col1:
        raise ValueError(
            f"the rectangle {(row0, col0, row1, col1)} is empty: it needs row0 < row1 and "
            "col0 < col1 (row1 and col1 are exclusive)"
        )
    if row0 < 0 or col0 < 0 or row1 > h or col1 > w:
        raise ValueError(
            f"the rectangle {(row0, col0, row1, col1)} reaches outside the {h} x {w} patch "
            f"grid (0 <= row0 < row1 <= {h}, 0 <= col0 < col1 <= {w})"
        )
    return row0, col0, row1, col1


def _ints(value: object, count: int, message: str) -> tuple[int, ...]:
    """``value`` as a tuple of ``count`` ints (numpy integers too; bools refused)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"{message}, got {value!r}")
    items = list(value)
    if len(items) != count or any(isinstance(item, bool) for item in items):
        raise ValueError(f"{message}, got {value!r}")
    try:
        return tuple(operator.index(item) for item in items)
    except TypeError:
        raise ValueError(f"{message}, got {value!r}") from None
