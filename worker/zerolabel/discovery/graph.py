"""Pure helpers shared by the discovery methods: patch graphs, the normalized-cut eigenvector,
bipartitions and connected components on the patch grid.

Normalized cut (Shi & Malik) on a graph ``W`` with degrees ``D = diag(W 1)`` uses the
second-smallest solution of the generalized problem ``(D - W) v = lambda D v``. Two solvers
return the same pair:

- :func:`dense_second_smallest_eigenvector`: ``scipy.linalg.eigh`` on the dense pencil,
  O(N^3), what the TokenCut and MaskCut authors run (seconds at N = 3600 on 2 CPU cores);
- :func:`second_smallest_eigenvector`: Lanczos on the deflated normalized affinity, about
  twenty O(N^2) products on graphs with a clear cut (tens of milliseconds at N = 3600), a few
  hundred when nearly every patch is isolated (``bench/bench_ncut.py`` compares them).

Eigenvectors have no intrinsic sign. Both solvers return the canonical one, whose entry of
largest magnitude is positive, so that rules which read the sign (MaskCut's corner rule) give
the same answer whatever solver or LAPACK build runs.

Clean graphs give eigenvectors with many entries equal up to rounding (all patches of a clean
cluster share one value), so a plain argmax would pick whichever of them the solver's rounding
favours. :func:`peak_index` treats values within ``PEAK_RTOL`` of the maximum as tied and takes
the lowest index, which makes seeds reproducible across solvers.

The same graph gives the same eigenvector on every run, even when the wanted eigenvalue is
repeated (a constant or near-constant image makes every patch alike: any vector orthogonal to
the trivial one is an eigenvector). The Lanczos start vector is fixed, and so are the vectors
ARPACK draws when its Krylov space closes early, which it takes from a generator seeded here.
A cut with no structure at all (``lambda`` = 1 up to rounding) scores exactly 0
(:func:`cut_score`); the pipeline emits no region for it.
"""

from __future__ import annotations

import functools
import inspect
import logging

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.ndimage
import scipy.sparse.linalg
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PEAK_RTOL = 1e-9
"""Relative tolerance (of the largest magnitude) within which eigenvector entries are tied."""

NO_STRUCTURE_ATOL = 1e-9
"""Cut scores ``1 - lambda`` at most this are 0: rounding of ``lambda`` = 1 (no structure)."""

LANCZOS_SEED = 0
"""Seed of the Lanczos start vector and of any vector ARPACK draws while restarting."""

LANCZOS_MIN_N = 8
"""Below this many nodes the fast solver hands the problem to the dense one."""

LANCZOS_ATTEMPTS = ((12, 4), (48, 60))
"""(ARPACK ``ncv``, ``maxiter``) tried in turn. A small Krylov basis converges within one or two
passes on graphs with a clear cut (about 20 products); graphs whose top eigenvalues crowd
together (many near-isolated patches) need a larger basis (a few hundred products). If both
fail, the dense solver runs."""


def validate_keys(keys: torch.Tensor, grid_hw: tuple[int, int]) -> None:
    """Raise ValueError unless ``keys`` is [h * w, D] floating point for ``grid_hw = (h, w)``.

    Args:
        keys: [N, D] patch features, row-major over the grid.
        grid_hw: (h, w) of the patch grid.
    """
    if keys.ndim != 2:
        raise ValueError(f"keys must be [N, D] patch features, got shape {tuple(keys.shape)}")
    if not keys.is_floating_point():
        raise ValueError(f"keys must be floating point, got {keys.dtype}")
    if len(grid_hw) != 2 or min(grid_hw) < 0:
        raise ValueError(f"grid_hw must be (h, w) with h, w >= 0, got {grid_hw}")
    h, w = grid_hw
    if h * w != keys.shape[0]:
        raise ValueError(
            f"grid_hw {grid_hw} holds {h * w} patches but keys has {keys.shape[0]} rows; "
            "pass the (h, w) patch grid the keys were extracted on"
        )


def component_containing(mask: torch.Tensor, seed_rc: tuple[int, int]) -> torch.Tensor:
    """The 4-connected component of ``mask`` that contains the seed cell.

    Diagonal neighbours are not connected (``scipy.ndimage.label``'s default cross structure).

    Args:
        mask: [h, w] bool grid.
        seed_rc: (row, col) of the seed cell.

    Returns:
        [h, w] bool on ``mask``'s device; all False when the seed cell is False.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be [h, w], got shape {tuple(mask.shape)}")
    row, col = seed_rc
    if not (0 <= row < mask.shape[0] and 0 <= col < mask.shape[1]):
        raise ValueError(f"seed_rc {seed_rc} lies outside the {tuple(mask.shape)} grid")
    labels, _ = scipy.ndimage.label(mask.detach().cpu().numpy().astype(bool))
    seed_label = labels[row, col]
    if seed_label == 0:
        return torch.zeros_like(mask, dtype=torch.bool)
    return torch.from_numpy(labels == seed_label).to(mask.device)


def ncut_graph(keys: torch.Tensor, tau: float, eps: float) -> torch.Tensor:
    """TokenCut's binary, fully connected patch graph.

    Keys are L2-normalised (all-zero rows stay zero) and compared by cosine similarity ``S``;
    ``W = 1`` where ``S > tau``, else ``eps`` (which keeps the graph connected).

    Args:
        keys: [N, D] patch features.
        tau: similarity threshold for a full-weight edge.
        eps: weight of every other edge, > 0.

    Returns:
        [N, N] symmetric float64 affinity on ``keys``' device, diagonal included.
    """
    if eps <= 0:
        raise ValueError(f"eps must be > 0 to keep the graph connected, got {eps}")
    unit = F.normalize(keys.float(), p=2, dim=1)
    similarity = unit @ unit.T
    affinity = torch.full_like(similarity, eps, dtype=torch.float64)
    affinity[similarity > tau] = 1.0
    return affinity


def second_smallest_eigenvector(w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Fast second-smallest pair of ``(D - W) v = lambda D v``.

    With ``M = D^-1/2 W D^-1/2`` the problem becomes ``M u = (1 - lambda) u``, ``v = D^-1/2 u``.
    ``M``'s top eigenpair is known (eigenvalue 1, ``u0`` proportional to ``D^1/2 1``); it is
    pushed to -1 by ``M - 2 u0 u0^T`` so that the largest remaining eigenpair, found by Lanczos
    (ARPACK, float64, fixed start vector, full precision), is the one wanted. ``M`` is never
    formed: each product is ``D^-1/2 (W (D^-1/2 x))`` on ``w``'s device, O(N^2), no N x N copy.

    Args:
        w: [N, N] symmetric non-negative affinity with positive degrees, N >= 2.

    Returns:
        ``v``: [N] float64 on ``w``'s device, ``v^T D v = 1``, canonical sign (see module).
        ``lambda``: the generalized eigenvalue, in [0, 2].
    """
    w64, degree = _affinity_and_degree(w)
    n = w64.shape[0]
    if n < LANCZOS_MIN_N:
        return dense_second_smallest_eigenvector(w)
    inv_sqrt = degree.rsqrt()
    top = degree.sqrt() / degree.sqrt().norm()

    def deflated_product(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x_t = torch.from_numpy(x.reshape(n)).to(w64.device)
        y = inv_sqrt * torch.mv(w64, inv_sqrt * x_t) - 2.0 * top * torch.dot(top, x_t)
        product: npt.NDArray[np.float64] = y.cpu().numpy()
        return product

    operator = scipy.sparse.linalg.LinearOperator((n, n), matvec=deflated_product, dtype=np.float64)
    for ncv, maxiter in LANCZOS_ATTEMPTS:
        found = _top_eigenpair(operator, ncv=min(n - 1, ncv), maxiter=maxiter)
        if found is not None:
            mu, u = found
            return _canonical(inv_sqrt.cpu().numpy() * u, w.device), 1.0 - mu
    logger.warning("Lanczos did not converge on a %d-node graph; using the dense solver", n)
    return dense_second_smallest_eigenvector(w)


def dense_second_smallest_eigenvector(w: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Reference second-smallest pair of ``(D - W) v = lambda D v`` (dense, float64, O(N^3)).

    Args:
        w: [N, N] symmetric non-negative affinity with positive degrees, N >= 2.

    Returns:
        ``v``: [N] float64 on ``w``'s device, ``v^T D v = 1``, canonical sign (see module).
        ``lambda``: the generalized eigenvalue.
    """
    w64, degree = _affinity_and_degree(w)
    matrix, d = w64.cpu().numpy(), np.diag(degree.cpu().numpy())
    values, vectors = scipy.linalg.eigh(d - matrix, d, subset_by_index=[1, 1])
    return _canonical(vectors[:, 0], w.device), float(values[0])


def cut_score(eigenvalue: float) -> float:
    """Confidence of a normalized cut: ``clamp(1 - lambda, 0, 1)``, and exactly 0 when
    ``1 - lambda`` is within :data:`NO_STRUCTURE_ATOL` of 0 (a graph without structure, where
    rounding alone decides the sign).

    Args:
        eigenvalue: the cut's generalized eigenvalue ``lambda``.
    """
    score = min(max(1.0 - eigenvalue, 0.0), 1.0)
    return 0.0 if score <= NO_STRUCTURE_ATOL else score


def salient_side(v: torch.Tensor) -> torch.Tensor:
    """``v > mean(v)``: the side of the cut the authors call salient.

    Args:
        v: [N] eigenvector.

    Returns:
        [N] bool.
    """
    return v > v.mean()


def peak_index(values: torch.Tensor) -> int:
    """Index of the maximum; values within ``PEAK_RTOL * max |values|`` of it count as tied and
    the lowest index wins.

    Args:
        values: [N] real values, N >= 1.
    """
    slack = PEAK_RTOL * values.abs().max()
    return int(torch.nonzero(values >= values.max() - slack)[0, 0])


def bipartition(v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """TokenCut's foreground: the side of ``v > mean(v)`` that holds the seed ``argmax |v|``
    (ties as in :func:`peak_index`).

    Args:
        v: [N] eigenvector.

    Returns:
        [N] bool foreground and the seed's patch index.
    """
    foreground = salient_side(v)
    seed = peak_index(v.abs())
    if not foreground[seed]:
        foreground = ~foreground
    return foreground, seed


def _top_eigenpair(
    operator: scipy.sparse.linalg.LinearOperator, *, ncv: int, maxiter: int
) -> tuple[float, npt.NDArray[np.float64]] | None:
    """Largest-algebraic eigenpair by ARPACK from a fixed start vector; None if not converged.

    ARPACK restarts from random vectors when its Krylov space becomes invariant (a repeated
    eigenvalue, e.g. a constant image); SciPy draws them from fresh OS entropy unless given a
    generator, so one seeded here keeps the result the same from run to run.
    """
    start = np.random.default_rng(LANCZOS_SEED).standard_normal(operator.shape[0])
    seeded = {"rng": np.random.default_rng(LANCZOS_SEED)} if _eigsh_takes_rng() else {}
    try:
        mu, u = scipy.sparse.linalg.eigsh(
            operator, k=1, which="LA", v0=start, ncv=ncv, maxiter=maxiter, tol=0, **seeded
        )
    except scipy.sparse.linalg.ArpackNoConvergence:
        return None
    return float(mu[0]), u[:, 0]


@functools.cache
def _eigsh_takes_rng() -> bool:
    """Whether this SciPy's ``eigsh`` accepts a generator (older ones restart from a fixed
    internal seed instead)."""
    return "rng" in inspect.signature(scipy.sparse.linalg.eigsh).parameters


def _affinity_and_degree(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` as float64 on its device (no copy when it already is) and its [N] degrees."""
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise ValueError(f"affinity must be [N, N] with N >= 2, got shape {tuple(w.shape)}")
    w64 = w.detach().to(torch.float64)
    degree = w64.sum(dim=1)
    if not bool((degree > 0).all()):
        raise ValueError("every node needs a positive degree; build W with eps > 0")
    return w64, degree


def _canonical(v: npt.NDArray[np.float64], device: torch.device) -> torch.Tensor:
    """``v`` as a tensor on ``device``, signed so that its peak magnitude is positive."""
    vector = torch.from_numpy(np.ascontiguousarray(v))
    if vector[peak_index(vector.abs())] < 0:
        vector = -vector
    return vector.to(device)
