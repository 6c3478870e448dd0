from __future__ import annotations

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
