"""Pseudo-classes against ground-truth classes: purity, NMI, Hungarian accuracy.

Labels of either side may be any hashable values (ints, strings); objects are matched by
position, so both lists must come from the same objects in the same order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

IntArray = npt.NDArray[np.int64]


def purity(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Share of objects whose cluster's majority class is their class (1.0: pure clusters)."""
    table = _contingency(pred, truth)
    return float(table.max(axis=1).sum() / table.sum())


def nmi(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Normalised mutual information between clusters and classes (arithmetic mean norm)."""
    pred_ids, truth_ids = _encode_pair(pred, truth)
    return float(normalized_mutual_info_score(truth_ids, pred_ids))


def hungarian_accuracy(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Accuracy after the best one-to-one mapping of clusters to classes.

    Clusters left without a class (more clusters than classes) count as wrong, as in LOST's
    evaluation.
    """
    table = _contingency(pred, truth)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def _contingency(pred: npt.ArrayLike, truth: npt.ArrayLike) -> IntArray:
    """[clusters, classes] counts of objects."""
    pred_ids, truth_ids = _encode_pair(pred, truth)
    table = np.zeros((pred_ids.max() + 1, truth_ids.max() + 1), dtype=np.int64)
    np.add.at(table, (pred_ids, truth_ids), 1)
    return table


def _encode_pair(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    """Any labels (ints, strings) -> dense int ids, checking both have the same length."""
    pred_arr, truth_arr = np.asarray(pred), np.asarray(truth)
    if pred_arr.ndim != 1 or pred_arr.shape != truth_arr.shape or pred_arr.size == 0:
        raise ValueError(
            f"need two non-empty label lists of equal length, not {pred_arr.shape} "
            f"and {truth_arr.shape}"
        )
    pred_ids = np.unique(pred_arr, return_inverse=True)[1].astype(np.int64)
    truth_ids = np.unique(truth_arr, return_inverse=True)[1].astype(np.int64)
    return pred_ids, truth_ids
