"""Group discovered objects into pseudo-classes across a dataset (LOST's class-aware step).

Pure numpy / scikit-learn. One descriptor per object (the ViT's CLS output on the object's
crop, see :mod:`zerolabel.vit.descriptors`) is L2-normalised, whitened per dimension over the
dataset and L2-normalised again; K-Means on the result gives the pseudo-classes, named
``cluster_00``, ``cluster_01``... until a person renames or merges them with :func:`apply_mapping`.

:func:`cluster_objects` is the entry point: it takes ``(object_id, descriptor or None)`` pairs
and returns labels keyed by object id, so objects whose descriptor failed can never shift the
labels of the others (LOST's ``cluster_for_OD.py`` dropped features of unexpected shape and
then assigned labels by position, which misaligns every object after the first one dropped).

Evaluation against ground truth lives in :mod:`zerolabel.evaluation.clusters`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

import numpy as np
import numpy.typing as npt
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from zerolabel.progress import track

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
K = TypeVar("K", bound=Hashable)

N_INIT = 10
"""K-Means restarts; fixed so that a seed alone decides the result."""

SILHOUETTE_SAMPLES = 2000
"""Objects scored by :func:`suggest_k` at most (a seeded subsample of larger datasets)."""

SINGLE_THREAD_ROWS = 1024
"""Datasets up to this many objects are clustered on one thread (faster than several)."""

CONSTANT_STD = 1e-12
"""A dimension whose std over the dataset is at most this is constant: whitened to 0."""


def l2_normalize(x: npt.ArrayLike) -> FloatArray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero.

    Args:
        x: [M, E] descriptors.

    Returns:
        [M, E] float64.
    """
    rows = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: FloatArray = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return unit


@dataclass(frozen=True)
class Whitening:
    """Per-dimension statistics of the L2-normalised descriptors of one dataset.

    Fitted once by :func:`whiten`; :meth:`apply` maps new objects into the same space so they
    can be given to :func:`assign` with the dataset's centroids.
    """

    mean: FloatArray  # [E]
    std: FloatArray  # [E]; dimensions with std <= CONSTANT_STD are whitened to 0

    @classmethod
    def fit(cls, descriptors: npt.ArrayLike) -> Whitening:
        """Statistics of ``descriptors`` ([M, E], M >= 1) after row L2 normalisation."""
        unit = _check_matrix(descriptors)
        return cls(mean=unit.mean(axis=0), std=unit.std(axis=0))

    def apply(self, descriptors: npt.ArrayLike) -> FloatArray:
        """L2-normalise rows, standardise each dimension, L2-normalise again.

        Args:
            descriptors: [M, E] raw descriptors, E as in the fitted data.

        Returns:
            [M, E] float64 rows of unit norm (zero rows where every dimension is constant).
        """
        unit = _check_matrix(descriptors, allow_empty=True)
        if unit.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"descriptors have {unit.shape[1]} dimensions, the whitening {self.mean.shape[0]}"
            )
        varying = self.std > CONSTANT_STD
        scale = np.divide(1.0, self.std, out=np.zeros_like(self.std), where=varying)
        return l2_normalize((unit - self.mean) * scale)


def whiten(descriptors: npt.ArrayLike) -> tuple[FloatArray, Whitening]:
    """Whiten a dataset's descriptors (fit and apply in one step).

    Args:
        descriptors: [M, E] raw descriptors, M >= 1.

    Returns:
        The whitened [M, E] rows (unit norm) and the fitted :class:`Whitening`.
    """
    whitening = Whitening.fit(descriptors)
    return whitening.apply(descriptors), whitening


def _check_matrix(x: npt.ArrayLike, *, allow_empty: bool = False) -> FloatArray:
    """[M, E] finite values -> their row-normalised float64 copy."""
    rows = np.asarray(x, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise ValueError(f"descriptors must be a 2-D [M, E] array, not shape {rows.shape}")
    if rows.shape[0] == 0 and not allow_empty:
        raise ValueError("no descriptors to fit")
    if not np.isfinite(rows).all():
        raise ValueError("descriptors contain NaN or infinite values")
    return l2_normalize(rows)


@dataclass(frozen=True)
class Clustering:
    """K-Means result; cluster ids are numbered in order of first appearance in the data."""

    centroids: FloatArray  # [k, E]
    labels: IntArray  # [M] cluster id of each row
    inertia: float  # sum of squared distances to the nearest centroid

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def fit_kmeans(x: npt.ArrayLike, k: int, seed: int = 0) -> Clustering:
    """K-Means with a fixed number of restarts: the same data and seed give the same labels.

    Args:
        x: [M, E] whitened descriptors.
        k: number of clusters, 1 <= k <= number of distinct rows.
        seed: K-Means initialisation seed.

    Raises:
        ValueError: k out of range.
    """
    rows = np.asarray(x, dtype=np.float64)
    distinct = len(np.unique(rows, axis=0)) if rows.ndim == 2 else 0
    if not 1 <= k <= distinct:
        raise ValueError(
            f"k = {k} clusters cannot be fitted to {distinct} distinct descriptors: "
            "choose k between 1 and the number of distinct objects"
        )
    # sklearn parallelises over chunks of 256 rows: for small data the OpenMP threads only
    # wait on each other (10x slower on a busy machine), so run those single-threaded.
    threads = 1 if rows.shape[0] <= SINGLE_THREAD_ROWS else None
    with threadpool_limits(limits=threads, user_api="openmp"):
        model = KMeans(n_clusters=k, n_init=N_INIT, random_state=seed).fit(rows)
    raw = np.asarray(model.labels_, dtype=np.int64)
    # Renumber by first appearance so names do not depend on K-Means' internal order.
    seen = list(dict.fromkeys(raw.tolist()))
    order = np.array(seen + sorted(set(range(k)) - set(seen)), dtype=np.int64)
    renumber = np.empty(k, dtype=np.int64)
    renumber[order] = np.arange(k)
    centroids = np.asarray(model.cluster_centers_, dtype=np.float64)[order]
    return Clustering(centroids, renumber[raw], float(model.inertia_))


def assign(x: npt.ArrayLike, centroids: npt.ArrayLike) -> IntArray:
    """Nearest centroid (squared Euclidean; ties to the lowest id) of each row.

    Args:
        x: [M, E] descriptors whitened with the dataset's :class:`Whitening`.
        centroids: [k, E].

    Returns:
        [M] int64 cluster ids.
    """
    rows = np.asarray(x, dtype=np.float64)
    centres = np.asarray(centroids, dtype=np.float64)
    if rows.ndim != 2 or centres.ndim != 2 or rows.shape[1] != centres.shape[1]:
        raise ValueError(f"cannot assign {rows.shape} rows to {centres.shape} centroids")
    distances = (
        (rows**2).sum(axis=1)[:, None] - 2.0 * rows @ centres.T + (centres**2).sum(axis=1)[None]
    )
    return np.asarray(distances.argmin(axis=1), dtype=np.int64)


def suggest_k(x: npt.ArrayLike, k_range: Sequence[int] = range(2, 21), seed: int = 0) -> int:
    """The k of ``k_range`` whose K-Means clustering has the best silhouette score.

    Datasets larger than :data:`SILHOUETTE_SAMPLES` are scored on a seeded subsample. Ties go
    to the smaller k.

    Args:
        x: [M, E] whitened descriptors.
        k_range: candidate numbers of clusters; those outside 2..min(M - 1, distinct rows)
            cannot be scored and are skipped.
        seed: subsampling and K-Means seed.

    Returns:
        The best k, or 1 when no candidate can be scored (fewer than 3 objects, or all alike).
    """
    rows = np.asarray(x, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"need a non-empty [M, E] array, not shape {rows.shape}")
    if rows.shape[0] > SILHOUETTE_SAMPLES:
        picked = np.random.default_rng(seed).choice(rows.shape[0], SILHOUETTE_SAMPLES, False)
        rows = rows[np.sort(picked)]
    limit = min(rows.shape[0] - 1, len(np.unique(rows, axis=0)))
    best_k, best_score = 1, -np.inf
    candidates = [k for k in sorted(set(k_range)) if 2 <= k <= limit]
    for k in track(candidates, "choosing k by silhouette", unit="candidate"):
        labels = fit_kmeans(rows, k, seed).labels
        score = float(silhouette_score(rows, labels))
        if score > best_score:
            best_k, best_score = k, score
    return best_k


def cluster_names(k: int) -> list[str]:
    """Default pseudo-class names: ``cluster_00`` ... (zero-padded to sort in order)."""
    width = max(2, len(str(k - 1)))
    return [f"cluster_{i:0{width}d}" for i in range(k)]


@overload
def apply_mapping(labels: Sequence[str], mapping: Mapping[str, str]) -> list[str]: ...
@overload
def apply_mapping(labels: Sequence[str | None], mapping: Mapping[str, str]) -> list[str | None]: ...
def apply_mapping(
    labels: Sequence[str | None], mapping: Mapping[str, str]
) -> list[str] | list[str | None]:
    """Rename clusters; mapping several clusters to one name merges them.

    ``{"cluster_00": "dog", "cluster_03": "dog", "cluster_01": "cat"}`` turns clusters 0 and 3
    into ``dog``; clusters not in the mapping keep their name, and None (objects without a
    descriptor) stays None. Renaming is simultaneous, not chained.

    Raises:
        ValueError: a mapping key that is no label in ``labels`` (a typo would otherwise
            silently leave a cluster unnamed), or an empty new name.
    """
    present = {label for label in labels if label is not None}
    unknown = sorted(set(mapping) - present)
    if unknown:
        raise ValueError(
            f"mapping names clusters that do not exist: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(present)) or 'none'})"
        )
    empty = sorted(key for key, name in mapping.items() if not name)
    if empty:
        raise ValueError(f"mapping gives an empty name to {', '.join(empty)}")
    renamed: list[str | None] = [
        None if label is None else mapping.get(label, label) for label in labels
    ]
    return renamed


@dataclass(frozen=True)
class ObjectClusters(Generic[K]):
    """Pseudo-class of every object of a dataset, keyed by object id."""

    labels: dict[K, str | None]  # None: the object had no descriptor
    whitening: Whitening
    clustering: Clustering
    names: list[str]  # names[cluster id]

    def assign_names(self, descriptors: npt.ArrayLike) -> list[str]:
        """Pseudo-class names of new objects ([M, E] raw descriptors), without refitting."""
        ids = assign(self.whitening.apply(descriptors), self.clustering.centroids)
        return [self.names[i] for i in ids]


def cluster_objects(
    items: Sequence[tuple[K, npt.ArrayLike | None]],
    k: int | None = None,
    seed: int = 0,
    k_range: Sequence[int] = range(2, 21),
) -> ObjectClusters[K]:
    """Whiten and cluster objects' descriptors; labels stay attached to their object ids.

    Args:
        items: ``(object_id, descriptor)`` pairs, descriptor [E] or None where computing it
            failed. Ids must be unique.
        k: number of clusters; None picks it in ``k_range`` with :func:`suggest_k`.
        seed: K-Means seed.
        k_range: candidates when ``k`` is None.

    Returns:
        Labels for every id of ``items`` (in input order), None for the failed ones.

    Raises:
        ValueError: duplicate ids, no descriptor at all, descriptors of different shapes, or
            ``k`` above the number of objects with a descriptor.
    """
    ids = [object_id for object_id, _ in items]
    duplicates = sorted(str(i) for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate object ids: {', '.join(duplicates)}")
    kept_ids, matrix = _stack_descriptors(items)
    if k is not None and k > len(kept_ids):
        failed = len(items) - len(kept_ids)
        without = f" ({failed} more had no descriptor)" if failed else ""
        raise ValueError(
            f"{len(kept_ids)} objects{without} cannot make {k} clusters: "
            f"lower k to at most {len(kept_ids)}"
        )
    whitened, whitening = whiten(matrix)
    chosen_k = suggest_k(whitened, k_range, seed) if k is None else k
    clustering = fit_kmeans(whitened, chosen_k, seed)
    names = cluster_names(chosen_k)
    labels: dict[K, str | None] = dict.fromkeys(ids)
    for object_id, cluster in zip(kept_ids, clustering.labels.tolist(), strict=True):
        labels[object_id] = names[cluster]
    return ObjectClusters(labels, whitening, clustering, names)


def _stack_descriptors(
    items: Sequence[tuple[K, npt.ArrayLike | None]],
) -> tuple[list[K], FloatArray]:
    """Ids with a descriptor and their [M, E] matrix, row i belonging to id i."""
    kept = [(i, np.asarray(d, dtype=np.float64)) for i, d in items if d is not None]
    if not kept:
        raise ValueError(f"none of the {len(items)} objects has a descriptor to cluster")
    broken = [str(i) for i, d in kept if not np.isfinite(d).all()][:8]
    if broken:
        raise ValueError(f"NaN or infinite descriptors (e.g. objects {', '.join(broken)})")
    shapes = Counter(d.shape for _, d in kept)
    expected = kept[0][1].shape
    if len(shapes) > 1 or len(expected) != 1:
        odd = [str(i) for i, d in kept if d.shape != expected or d.ndim != 1][:8]
        raise ValueError(
            f"descriptors must all be 1-D of one length; shapes {dict(shapes)} "
            f"(e.g. objects {', '.join(odd) or kept[0][0]}): pass None for a failed object"
        )
    return [i for i, _ in kept], np.stack([d for _, d in kept])
