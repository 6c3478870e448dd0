from __future__ import annotations

import pytest
import torch
from zerolabel.discovery.components import label_stack, largest_component


def grid(rows: list[str]) -> torch.Tensor:
    return torch.tensor([[c == "#" for c in row] for row in rows])


def test_largest_component_uses_edge_neighbours_and_breaks_ties_in_raster_order():
    mask = grid(["#.##", ".#..", "...#", "##.#"])  # diagonal cells are not connected
    assert torch.equal(largest_component(mask), grid(["..##", "....", "....", "...."]))
    assert not largest_component(torch.zeros(3, 3, dtype=torch.bool)).any()


def test_label_stack_labels_each_mask_apart_in_order():
    masks = torch.stack([grid(["##.", "..#"]), grid(["###", "..#"])])
    labels, areas = label_stack(masks)
    assert labels.tolist() == [[[1, 1, 0], [0, 0, 2]], [[3, 3, 3], [0, 0, 3]]]
    assert areas.tolist() == [5, 2, 1, 4]  # label 0: the unlabelled cells


def test_eight_connectivity_joins_diagonal_neighbours():
    mask = grid(["##..", "##..", "..#.", "...#"])  # a 2 x 2 block, then a diagonal tail of 2
    assert torch.equal(largest_component(mask, connectivity=8), mask)
    assert torch.equal(largest_component(mask), grid(["##..", "##..", "....", "...."]))


def test_eight_connectivity_breaks_ties_in_raster_order_too():
    # Two diagonal pairs of 2 cells, (0,0)-(1,1) and (2,3)-(3,2), and (0,3) alone.
    mask = grid(["#..#", ".#..", "...#", "..#."])
    assert torch.equal(
        largest_component(mask, connectivity=8), grid(["#...", ".#..", "....", "...."])
    )


def test_label_stack_takes_either_connectivity_within_a_mask_only():
    masks = torch.stack([grid(["#.", ".#"]), grid([".#", "#."])])
    _, four = label_stack(masks)
    _, eight = label_stack(masks, connectivity=8)
    assert four.tolist() == [4, 1, 1, 1, 1]
    assert eight.tolist() == [4, 2, 2]  # each diagonal pair is one; the two masks stay apart


@pytest.mark.parametrize("connectivity", [0, 6, "8"])
def test_other_connectivities_are_refused(connectivity):
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        largest_component(grid(["#"]), connectivity=connectivity)
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        label_stack(grid(["#"])[None], connectivity=connectivity)
