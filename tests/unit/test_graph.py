from __future__ import annotations

import logging

import pytest
import scipy.linalg
import torch
from zerolabel.discovery import graph
from zerolabel.discovery.graph import (
    bipartition,
    component_containing,
    dense_second_smallest_eigenvector,
    ncut_graph,
    second_smallest_eigenvector,
)
from zerolabel.discovery.maskcut import mask_out, oriented_foreground

from tests.unit.synthetic import planted_keys, random_blocks

# --- component_containing -------------------------------------------------------------------


def test_component_excludes_diagonal_neighbours():
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[1, 1] = mask[1, 2] = mask[2, 2] = True  # an L through 4-neighbours
    mask[3, 3] = True  # touches (2, 2) only by a corner
    component = component_containing(mask, (1, 1))
    expected = mask.clone()
    expected[3, 3] = False
    assert torch.equal(component, expected)
    assert torch.equal(component_containing(mask, (3, 3)), mask & ~expected)


def test_component_is_empty_when_the_seed_cell_is_off():
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    component = component_containing(mask, (0, 0))
    assert component.dtype == torch.bool and component.shape == (3, 4)
    assert not component.any()


def test_component_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        component_containing(torch.ones(3, 3, dtype=torch.bool), (3, 0))
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        component_containing(torch.ones(9, dtype=torch.bool), (0, 0))


# --- ncut_graph -----------------------------------------------------------------------------


def test_ncut_graph_thresholds_cosine_similarity():
    keys = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    w = ncut_graph(keys, tau=0.5, eps=1e-3)
    cosine = (
        torch.nn.functional.normalize(keys, dim=1) @ torch.nn.functional.normalize(keys, dim=1).T
    )
    assert w.dtype == torch.float64 and torch.equal(w, w.T)
    assert torch.equal(w == 1.0, cosine > 0.5)
    assert torch.all((w == 1.0) | (w == 1e-3))
    assert torch.all(w[3] == 1e-3), "an all-zero key has no full-weight edge, not even to itself"


def test_ncut_graph_requires_positive_eps():
    with pytest.raises(ValueError, match="eps"):
        ncut_graph(torch.randn(4, 3), tau=0.2, eps=0.0)


# --- eigenvector solvers ----------------------------------------------------------------------

FAMILIES = ["noise-only", "one-object", "two-objects", "three-objects", "zeroed-rows", "wide-tau"]
GRAPHS_PER_FAMILY = 20
MIN_COMPARED_PER_FAMILY = 17  # 6 x 17 = 102 >= 100 graphs compared in all
MIN_EIGENGAP = 1e-7  # below this the second eigenvector is not unique: no answer to compare


def random_graph(family: str, index: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """A seeded random TokenCut graph of the given family on a grid of 30 to 225 patches."""
    gen = torch.Generator().manual_seed(1000 * FAMILIES.index(family) + index)
    grid_hw = tuple(int(n) for n in torch.randint(5, 16, (2,), generator=gen))
    count = {"one-object": 1, "two-objects": 2, "three-objects": 3}.get(family)
    if count is None:
        count = int(torch.randint(0, 4, (1,), generator=gen))
    noise = float(torch.empty(1).uniform_(0.05, 0.25, generator=gen))
    tau = float(torch.empty(1).uniform_(-0.2 if family == "wide-tau" else 0.05, 0.5, generator=gen))
    if family == "noise-only":
        count, noise = 0, 1.0  # every direction random: no planted structure at all
    scene = planted_keys(
        grid_hw, random_blocks(grid_hw, count, gen), dim=16, noise=noise, seed=index
    )
    keys = scene.keys
    if family == "zeroed-rows":  # what MaskCut feeds its later cuts
        keys = mask_out(
            keys, scene.objects[0] if scene.objects else torch.zeros(grid_hw, dtype=bool)
        )
    return ncut_graph(keys, tau=tau, eps=1e-5), grid_hw


def eigengap(w: torch.Tensor) -> float:
    """lambda_3 - lambda_2 of the generalized problem, by the dense solver."""
    d = torch.diag(w.sum(dim=1)).numpy()
    values = scipy.linalg.eigh(d - w.numpy(), d, eigvals_only=True, subset_by_index=[1, 2])
    return float(values[1] - values[0])


def test_enough_graphs_are_compared():
    assert len(FAMILIES) * MIN_COMPARED_PER_FAMILY >= 100


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_solver_matches_the_dense_generalized_solution(family):
    compared = 0
    for index in range(GRAPHS_PER_FAMILY):
        w, grid_hw = random_graph(family, index)
        if eigengap(w) < MIN_EIGENGAP:
            continue
        compared += 1
        v, eigenvalue = second_smallest_eigenvector(w)
        v_ref, eigenvalue_ref = dense_second_smallest_eigenvector(w)
        assert eigenvalue == pytest.approx(eigenvalue_ref, rel=1e-9, abs=1e-12)
        fg, seed = bipartition(v)
        fg_ref, seed_ref = bipartition(v_ref)
        assert seed == seed_ref and torch.equal(fg, fg_ref), f"{family} graph {index}"
        oriented, oriented_ref = (
            oriented_foreground(v, grid_hw),
            oriented_foreground(v_ref, grid_hw),
        )
        assert oriented[1] == oriented_ref[1] and torch.equal(oriented[0], oriented_ref[0])
    assert compared >= MIN_COMPARED_PER_FAMILY, f"only {compared} {family} graphs had a gap"


def test_fast_solver_returns_a_normalised_d_orthogonal_canonical_vector():
    w, _ = random_graph("two-objects", 0)
    v, eigenvalue = second_smallest_eigenvector(w)
    degree = w.sum(dim=1)
    assert v.shape == (w.shape[0],) and v.dtype == torch.float64
    assert float((degree * v * v).sum()) == pytest.approx(1.0, rel=1e-9)
    assert abs(float((degree * v).sum())) < 1e-9
    assert v[v.abs().argmax()] > 0
    residual = (torch.diag(degree) - w) @ v - eigenvalue * degree * v
    assert float(residual.abs().max()) < 1e-9


@pytest.mark.parametrize("n", [2, 3, 7, 8, 9])
def test_tiny_graphs_are_solved(n):
    w = ncut_graph(torch.randn(n, 4, generator=torch.Generator().manual_seed(n)), 0.2, 1e-5)
    v, eigenvalue = second_smallest_eigenvector(w)
    v_ref, eigenvalue_ref = dense_second_smallest_eigenvector(w)
    assert eigenvalue == pytest.approx(eigenvalue_ref, abs=1e-9)
    assert torch.allclose(v, v_ref, atol=1e-6)


def test_fast_solver_falls_back_to_dense_when_lanczos_does_not_converge(monkeypatch, caplog):
    w, _ = random_graph("noise-only", 1)
    monkeypatch.setattr(graph, "LANCZOS_ATTEMPTS", ((3, 1),))
    with caplog.at_level(logging.WARNING, logger=graph.__name__):
        v, eigenvalue = second_smallest_eigenvector(w)
    v_ref, eigenvalue_ref = dense_second_smallest_eigenvector(w)
    assert "dense solver" in caplog.text
    assert eigenvalue == eigenvalue_ref and torch.equal(v, v_ref)


def test_solvers_reject_graphs_without_a_second_eigenvector():
    with pytest.raises(ValueError, match="N >= 2"):
        second_smallest_eigenvector(torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive degree"):
        dense_second_smallest_eigenvector(torch.zeros(3, 3, dtype=torch.float64))


# --- bipartition ----------------------------------------------------------------------------


def test_bipartition_keeps_the_side_of_the_largest_magnitude():
    v = torch.tensor([0.1, 0.2, 0.3, -0.9], dtype=torch.float64)  # mean -0.075
    foreground, seed = bipartition(v)
    assert seed == 3
    assert foreground.tolist() == [False, False, False, True]


def test_bipartition_keeps_v_above_the_mean_when_it_holds_the_seed():
    v = torch.tensor([-0.1, -0.2, -0.3, 0.9], dtype=torch.float64)
    foreground, seed = bipartition(v)
    assert seed == 3 and foreground.tolist() == [False, False, False, True]


def test_planted_block_separates_in_one_cut():
    scene = planted_keys((8, 9), [(slice(2, 5), slice(3, 7))], seed=5)
    v, eigenvalue = second_smallest_eigenvector(ncut_graph(scene.keys, 0.2, 1e-5))
    foreground, _ = bipartition(v)
    assert torch.equal(foreground.reshape(8, 9), scene.objects[0])
    assert eigenvalue < 0.01


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_solver_accepts_cuda_tensors():
    w, _ = random_graph("one-object", 3)
    v, eigenvalue = second_smallest_eigenvector(w.cuda())
    v_ref, eigenvalue_ref = dense_second_smallest_eigenvector(w)
    assert v.device.type == "cuda"
    assert eigenvalue == pytest.approx(eigenvalue_ref, rel=1e-9, abs=1e-12)
    assert torch.allclose(v.cpu(), v_ref, atol=1e-8)


# --- determinism on graphs without structure -------------------------------------------------


@pytest.mark.parametrize("n", [16, 400])
def test_a_graph_without_structure_gives_the_same_eigenvector_every_time(n):
    # Every patch alike (a constant image): eigenvalue 1 is repeated n - 1 times, so any
    # vector orthogonal to the trivial one solves the problem; ARPACK's restarts must not
    # pick a different one on each call.
    w = torch.ones(n, n, dtype=torch.float64)
    runs = [second_smallest_eigenvector(w) for _ in range(3)]
    assert all(torch.equal(v, runs[0][0]) for v, _ in runs)
    assert all(graph.cut_score(value) == 0.0 for _, value in runs)


def test_cut_score_is_zero_for_lambda_one_up_to_rounding():
    assert graph.cut_score(1.0 - 1e-15) == 0.0
    assert graph.cut_score(1.0 + 1e-15) == 0.0
    assert graph.cut_score(0.25) == 0.75
    assert graph.cut_score(-1e-12) == 1.0
