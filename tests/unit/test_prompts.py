"""Prompt methods (zerolabel.discovery.prompts): clicks and rectangles on synthetic patch keys
whose objects are known."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from zerolabel import methods
from zerolabel.discovery import FUNCTIONS as BATCH_FUNCTIONS
from zerolabel.discovery import prompts
from zerolabel.discovery.prompts import object_from_points, object_from_prompt, object_in_box
from zerolabel.errors import ConfigError

from tests.unit.synthetic import block_mask, planted_keys

GRID = (12, 16)
OBJECT = (slice(3, 7), slice(4, 9))  # 4 x 5 patches
OTHER = (slice(8, 11), slice(11, 15))  # 3 x 4 patches, apart from OBJECT


def two_objects(grid_hw: tuple[int, int] = GRID, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Keys with OBJECT and OTHER planted on a background, and their masks."""
    scene = planted_keys(grid_hw, [OBJECT, OTHER], seed=seed)
    return scene.keys, *scene.objects


def cells(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Every (row, col) of a mask."""
    return [(int(r), int(c)) for r, c in torch.nonzero(mask)]


def parts_scene(similar: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An object of two adjacent parts on a background along e0: ``a`` (rows 3-6, cols 3-6)
    and ``b`` (rows 3-6, cols 7-10). ``similar``: b's key leans towards a's (cosine 0.72, above
    the default tau: a click on either grows into both); else b has its own direction (cosine
    0.08 with a: a click grows into one part only).

    Returns:
        Keys [192, 8] of the (12, 16) grid (seeded noise), the masks of ``a`` and ``b``.
    """
    e = torch.eye(8)
    a_key = e[1] - 0.3 * e[0]
    b_key = (e[1] + e[2] - 0.3 * e[0]) if similar else (e[2] - 0.3 * e[0])
    a = block_mask(GRID, (slice(3, 7), slice(3, 7)))
    b = block_mask(GRID, (slice(3, 7), slice(7, 11)))
    keys = e[0].repeat(GRID[0] * GRID[1], 1)
    keys[a.flatten()] = a_key
    keys[b.flatten()] = b_key
    noise = torch.randn(keys.shape, generator=torch.Generator().manual_seed(3))
    return keys + 0.05 * noise, a, b


# --- clicks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((12, 16), OBJECT, 0, id="centre"),
        pytest.param((30, 40), (slice(9, 21), slice(14, 30)), 1, id="480x640-grid"),
        pytest.param((7, 5), (slice(2, 5), slice(1, 3)), 2, id="small-grid"),
    ],
)
def test_a_positive_click_anywhere_on_an_object_returns_exactly_its_patches(grid_hw, block, seed):
    # noise 0.05: one click compares one noisy key with every other (at the default 0.1, one
    # of the 1200 background patches of the large grid passes tau next to the object)
    scene = planted_keys(grid_hw, [block], noise=0.05, seed=seed)
    (truth,) = scene.objects
    for click in cells(truth)[:: max(1, int(truth.sum()) // 7)]:
        found = object_from_points(scene.keys, grid_hw, [click])
        assert found is not None and torch.equal(found.mask, truth), click
        assert 0.0 < found.score <= 1.0


def test_a_second_positive_click_on_another_part_adds_it():
    keys, a, b = parts_scene(similar=False)
    first = object_from_points(keys, GRID, [(4, 4)])
    assert first is not None and torch.equal(first.mask, a)
    both = object_from_points(keys, GRID, [(4, 4), (5, 9)])
    assert both is not None and torch.equal(both.mask, a | b)


def test_clicks_on_two_separate_objects_return_both():
    keys, first, second = two_objects()
    found = object_from_points(keys, GRID, [(4, 5), (9, 12)])
    assert found is not None and torch.equal(found.mask, first | second)


def test_a_negative_click_carves_out_the_region_similar_to_it():
    keys, a, b = parts_scene(similar=True)
    grown = object_from_points(keys, GRID, [(4, 4)])
    assert grown is not None and torch.equal(grown.mask, a | b)  # b resembles a: one object
    carved = object_from_points(keys, GRID, [(4, 4)], [(5, 9)])
    assert carved is not None and torch.equal(carved.mask, a)


def test_a_negative_click_keeps_only_the_pieces_that_hold_a_positive_click():
    keys, a, b = parts_scene(similar=True)
    keys = keys.clone()
    # a column of b's key splits a into a left piece (cols 3-4) and a right piece (col 6)
    split = block_mask(GRID, (slice(3, 7), slice(5, 6)))
    keys[split.flatten()] = keys[b.flatten()][: int(split.sum())]
    found = object_from_points(keys, GRID, [(4, 3)], [(5, 9)])
    assert found is not None
    assert torch.equal(found.mask, block_mask(GRID, (slice(3, 7), slice(3, 5))))


def test_a_negative_click_elsewhere_changes_nothing():
    keys, first, _ = two_objects()
    found = object_from_points(keys, GRID, [(4, 5)], [(9, 12)])
    assert found is not None and torch.equal(found.mask, first)


def test_a_click_on_the_background_returns_the_background_region():
    keys, first, second = two_objects()
    found = object_from_points(keys, GRID, [(0, 0)])
    assert found is not None and torch.equal(found.mask, ~(first | second))


@pytest.mark.parametrize(
    "corner", [(0, 0), (0, GRID[1] - 1), (GRID[0] - 1, 0), (GRID[0] - 1, GRID[1] - 1)]
)
def test_clicks_on_the_grid_border_find_the_object_there(corner):
    row, col = corner
    rows = slice(0, 3) if row == 0 else slice(GRID[0] - 3, GRID[0])
    cols = slice(0, 4) if col == 0 else slice(GRID[1] - 4, GRID[1])
    scene = planted_keys(GRID, [(rows, cols)], seed=4)
    found = object_from_points(scene.keys, GRID, [corner])
    assert found is not None and torch.equal(found.mask, scene.objects[0])
    background = object_from_points(scene.keys, GRID, [(GRID[0] // 2, GRID[1] // 2)])
    assert background is not None and torch.equal(background.mask, ~scene.objects[0])


def test_a_click_on_a_patch_unlike_its_neighbours_returns_that_patch():
    scene = planted_keys(GRID, [(slice(5, 6), slice(7, 8))], seed=5)
    found = object_from_points(scene.keys, GRID, [(5, 7)])
    assert found is not None and cells(found.mask) == [(5, 7)]


def test_a_click_on_an_all_zero_key_returns_that_patch():
    keys, *_ = two_objects()
    keys = keys.clone()
    keys[2 * GRID[1] + 2] = 0.0
    found = object_from_points(keys, GRID, [(2, 2)])
    assert found is not None and cells(found.mask) == [(2, 2)]


def test_a_negative_click_on_the_positive_clicks_patch_leaves_nothing():
    keys, *_ = two_objects()
    assert object_from_points(keys, GRID, [(4, 5)], [(4, 5)]) is None
    found = object_from_points(keys, GRID, [(4, 5), (9, 12)], [(4, 5)])
    assert found is not None and (4, 5) not in cells(found.mask) and found.mask[9, 12]


def test_scores_lie_in_0_1_and_a_featureless_grid_scores_0():
    keys, first, _ = two_objects()
    found = object_from_points(keys, GRID, [(4, 5)])
    assert found is not None
    unit = torch.nn.functional.normalize(keys, dim=1)
    prototype = torch.nn.functional.normalize(unit[first.flatten()].mean(0), dim=0)
    similarity = (unit @ prototype).double()
    expected = (similarity[first.flatten()].mean() - similarity[~first.flatten()].mean()) / 2
    assert found.score == pytest.approx(float(expected), abs=1e-6)
    flat = torch.ones(GRID[0] * GRID[1], 4)
    whole = object_from_points(flat, GRID, [(0, 0)])
    assert whole is not None and bool(whole.mask.all()) and whole.score == 0.0


def test_clicks_give_identical_objects_on_every_call_and_for_float64_keys():
    keys, *_ = two_objects(seed=7)
    a = object_from_points(keys, GRID, [(4, 5)], [(9, 12)])
    b = object_from_points(keys, GRID, [(4, 5)], [(9, 12)])
    c = object_from_points(keys.double(), GRID, [(4, 5)], [(9, 12)])
    assert a is not None and b is not None and c is not None
    assert torch.equal(a.mask, b.mask) and torch.equal(a.mask, c.mask) and a.score == b.score


# --- rectangles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "box",
    [
        pytest.param((1, 2, 9, 11), id="loose"),
        pytest.param((3, 4, 7, 10), id="margin-on-one-side"),  # the object fills 20 of 24
        pytest.param((2, 3, 7, 10), id="margin-on-two-sides"),
        pytest.param((2, 3, 11, 13), id="reaching-into-another-object"),
    ],
)
def test_a_rectangle_around_an_object_returns_the_object(box):
    keys, first, _ = two_objects()
    found = object_in_box(keys, GRID, box)
    assert found is not None and torch.equal(found.mask, first)
    assert 0.0 < found.score <= 1.0


def test_nothing_outside_the_rectangle_is_returned():
    big = (slice(2, 10), slice(3, 13))
    scene = planted_keys(GRID, [big], seed=8)
    box = (0, 0, 6, 8)  # the object's top-left quarter and background above and left of it
    found = object_in_box(scene.keys, GRID, box)
    assert found is not None
    inside = block_mask(GRID, (slice(0, 6), slice(0, 8)))
    assert torch.equal(found.mask, scene.objects[0] & inside)


def test_a_rectangle_on_the_grid_border_works():
    scene = planted_keys(GRID, [(slice(0, 4), slice(11, 16))], seed=9)
    found = object_in_box(scene.keys, GRID, (0, 9, 6, 16))
    assert found is not None and torch.equal(found.mask, scene.objects[0])


@pytest.mark.parametrize("box", [(4, 5, 5, 6), (4, 5, 5, 7), (4, 5, 6, 6)])
def test_a_rectangle_of_one_or_two_patches_returns_them(box):
    keys, *_ = two_objects()
    found = object_in_box(keys, GRID, box)
    assert found is not None
    assert torch.equal(found.mask, block_mask(GRID, (slice(box[0], box[2]), slice(box[1], box[3]))))


def test_a_rectangle_inside_one_object_returns_the_whole_rectangle():
    flat = torch.ones(GRID[0] * GRID[1], 4)  # every patch alike: the cut finds no structure
    found = object_in_box(flat, GRID, (2, 3, 8, 9))
    assert found is not None
    assert torch.equal(found.mask, block_mask(GRID, (slice(2, 8), slice(3, 9))))


def test_a_rectangle_over_the_whole_grid_returns_one_object_not_the_background():
    keys, first, second = two_objects()
    found = object_in_box(keys, GRID, (0, 0, *GRID))
    assert found is not None
    assert torch.equal(found.mask, first) or torch.equal(found.mask, second)


# --- clicks and a rectangle together ----------------------------------------------------------


def test_a_rectangle_and_a_positive_click_outside_it_give_both_objects():
    keys, first, second = two_objects()
    found = object_from_prompt(keys, GRID, [(9, 12)], box=(2, 3, 8, 10))
    assert found is not None and torch.equal(found.mask, first | second)


def test_a_positive_click_inside_the_rectangle_grows_inside_it_only():
    keys, first, second = two_objects()
    box = (2, 3, 10, 13)  # holds OBJECT and the top-left of OTHER
    found = object_from_prompt(keys, GRID, [(8, 11)], box=box)
    inside = block_mask(GRID, (slice(2, 10), slice(3, 13)))
    assert found is not None and torch.equal(found.mask, first | (second & inside))


def test_a_negative_click_carves_the_rectangles_object():
    keys, a, b = parts_scene(similar=True)
    whole = object_in_box(keys, GRID, (2, 2, 8, 12))
    assert whole is not None and torch.equal(whole.mask, a | b)
    carved = object_from_prompt(keys, GRID, negatives=[(5, 9)], box=(2, 2, 8, 12))
    assert carved is not None and torch.equal(carved.mask, a)


def test_without_a_positive_click_or_a_rectangle_there_is_no_object():
    keys, *_ = two_objects()
    assert object_from_prompt(keys, GRID, negatives=[(4, 5)]) is None


def test_the_prompt_function_is_the_click_and_rectangle_functions_alone():
    keys, *_ = two_objects(seed=11)
    clicks = object_from_prompt(keys, GRID, [(4, 5)], [(0, 0)])
    alone = object_from_points(keys, GRID, [(4, 5)], [(0, 0)])
    box = object_from_prompt(keys, GRID, box=(1, 2, 9, 11))
    box_alone = object_in_box(keys, GRID, (1, 2, 9, 11))
    assert clicks is not None and alone is not None and box is not None and box_alone is not None
    assert torch.equal(clicks.mask, alone.mask) and torch.equal(box.mask, box_alone.mask)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("positives", "negatives", "message"),
    [
        pytest.param([], [], "at least one positive click", id="no-click"),
        pytest.param([(12, 0)], [], r"\(12, 0\) lies outside the 12 x 16 patch grid", id="row"),
        pytest.param([(0, 16)], [], r"\(0, 16\) lies outside", id="column"),
        pytest.param([(-1, 3)], [], r"\(-1, 3\) lies outside", id="negative-row"),
        pytest.param([(1, 1)], [(1, 99)], r"negative click \(1, 99\) lies outside", id="neg"),
        pytest.param([(1.5, 2)], [], r"\(row, col\) pair of ints", id="float"),
        pytest.param([(True, 2)], [], r"\(row, col\) pair of ints", id="bool"),
        pytest.param([(1, 2, 3)], [], r"\(row, col\) pair of ints", id="triple"),
        pytest.param(["12"], [], r"\(row, col\) pair of ints", id="string"),
        pytest.param([(0, 0)] * 1025, [], "at most 1024", id="too-many"),
        pytest.param(None, [], "positive clicks must be a sequence", id="none"),
        pytest.param([(1, 1)], "ab", "negative clicks must be a sequence", id="text"),
    ],
)
def test_bad_clicks_are_refused_naming_the_cause(positives, negatives, message):
    keys, *_ = two_objects()
    with pytest.raises(ValueError, match=message):
        object_from_points(keys, GRID, positives, negatives)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        pytest.param((3, 3, 3, 5), "is empty", id="no-rows"),
        pytest.param((3, 6, 5, 4), "is empty", id="reversed"),
        pytest.param((0, 0, 13, 5), "reaches outside the 12 x 16 patch grid", id="too-tall"),
        pytest.param((-1, 0, 4, 5), "reaches outside", id="negative"),
        pytest.param((0, 0, 4), r"\(row0, col0, row1, col1\) ints", id="three"),
        pytest.param((0, 0, 4.0, 5), r"\(row0, col0, row1, col1\) ints", id="float"),
        pytest.param(None, "a prompt needs a click or a rectangle", id="nothing"),
    ],
)
def test_bad_rectangles_are_refused_naming_the_cause(box, message):
    keys, *_ = two_objects()
    with pytest.raises(ValueError, match=message):
        if box is None:
            object_from_prompt(keys, GRID)
        else:
            object_in_box(keys, GRID, box)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param(torch.zeros(GRID[0] * GRID[1]), r"\[N, D\]", id="1-d"),
        pytest.param(torch.zeros(10, 4), "holds 192 patches but keys has 10 rows", id="grid"),
        pytest.param(torch.zeros(192, 4, dtype=torch.int64), "floating point", id="ints"),
        pytest.param(torch.full((192, 4), math.nan), "NaN or infinite", id="nan"),
    ],
)
def test_bad_keys_are_refused_naming_the_cause(keys, message):
    with pytest.raises(ValueError, match=message):
        object_from_points(keys, GRID, [(0, 0)])


def test_parameters_out_of_range_are_refused_by_the_registry():
    keys, *_ = two_objects()
    with pytest.raises(ConfigError, match=r"parameter 'tau' of method 'points' must be in"):
        object_from_points(keys, GRID, [(0, 0)], tau=2.0)
    with pytest.raises(ConfigError, match=r"parameter 'eps' of method 'box' must be in \(0, 1\]"):
        object_in_box(keys, GRID, (0, 0, 4, 4), eps=0.0)


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(methods.PROMPT_METHODS))
def test_registered_prompt_parameters_are_the_functions_keyword_arguments(name):
    info = methods.get_prompt(name)
    assert info.kind is methods.MethodKind.PROMPT
    keyword = {
        p.name: (str(p.annotation), p.default)
        for p in inspect.signature(prompts.FUNCTIONS[name]).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert {p.name: (p.type, p.default) for p in info.params} == keyword


@pytest.mark.parametrize("name", sorted(methods.PROMPT_METHODS))
def test_every_numeric_prompt_parameter_is_bounded_on_both_sides(name):
    for param in methods.get_prompt(name).params:
        assert param.type in ("int", "float")
        assert param.minimum is not None and param.maximum is not None, f"{name}.{param.name}"


def test_prompt_methods_are_apart_from_the_batch_methods():
    assert set(prompts.FUNCTIONS) == set(methods.PROMPT_METHODS)
    assert not set(methods.PROMPT_METHODS) & set(methods.METHODS)
    assert all(info.kind is not methods.MethodKind.PROMPT for info in methods.METHODS.values())
    assert tuple(BATCH_FUNCTIONS) == methods.FEATURE_METHODS
    with pytest.raises(ConfigError, match="unknown prompt method 'lasso': use one of points"):
        methods.get_prompt("lasso")
    with pytest.raises(ConfigError, match="unknown method 'points'"):
        methods.get("points")
