"""Spearman rank correlation of region score and IoU: its computation, never a model's value."""

from __future__ import annotations

import math

import pytest
import scipy.stats
from zerolabel.contract import Box
from zerolabel.evaluation.ground_truth import GtImage
from zerolabel.evaluation.metrics import EvalReport, report_for
from zerolabel.evaluation.rank import ranks, score_iou_pairs, score_iou_spearman, spearman


def test_ranks_average_ties():
    assert ranks([0.3, 0.1, 0.3]) == [2.5, 1.0, 2.5]
    assert ranks([5.0, 5.0, 5.0, 1.0]) == [3.0, 3.0, 3.0, 1.0]
    assert ranks([]) == []


def test_hand_computed_value():
    # ranks x = 1 2 3 4, ranks y = 2 1 4 3: d^2 sums to 4, rho = 1 - 6 * 4 / (4 * 15) = 0.6
    assert spearman([0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.9, 0.7]) == pytest.approx(0.6)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([0.9, 0.8, 0.8, 0.1, 0.5, 0.5, 0.3], [0.7, 0.6, 0.2, 0.0, 0.6, 0.1, 0.0]),  # ties
        ([0.2, 0.4, 0.6, 0.8, 1.0], [0.0, 0.0, 0.55, 0.3, 0.9]),
        ([3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]),
    ],
)
def test_equals_scipy(x, y):
    expected = scipy.stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)


def test_undefined_cases_are_nan():
    assert math.isnan(spearman([0.5], [0.7]))  # one region
    assert math.isnan(spearman([], []))
    assert math.isnan(spearman([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]))  # constant score


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="2 scores but 3 IoUs"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1, math.nan], [1, 2])


GT = {
    "a": GtImage("a.jpg", (100, 100), [Box(0, 0, 50, 50), Box(50, 50, 100, 100)], ["x", "y"]),
    "neg": GtImage("neg.jpg", (100, 100), [], []),
}


def test_pairs_use_the_best_matching_box_and_zero_on_negatives():
    preds = {
        "a": [(Box(0, 0, 50, 50), 0.9), (Box(50, 50, 100, 75), 0.6), (Box(0, 50, 50, 100), 0.4)],
        "neg": [(Box(0, 0, 10, 10), 0.2)],
        "unknown": [(Box(0, 0, 10, 10), 1.0)],  # not a ground-truth image: left out
    }
    scores, ious = score_iou_pairs(preds, GT)
    assert scores == [0.9, 0.6, 0.4, 0.2]
    assert ious == [1.0, 0.5, 0.0, 0.0]
    rho, n = score_iou_spearman(preds, GT)
    assert n == 4 and rho == pytest.approx(scipy.stats.spearmanr(scores, ious).statistic)


def test_the_report_carries_the_correlation_and_prints_it():
    preds = {"a": [(Box(0, 0, 50, 50), 0.9), (Box(50, 50, 100, 75), 0.1)], "neg": []}
    report = report_for(preds, GT)
    assert (report.n_regions, report.spearman) == (2, pytest.approx(1.0))
    table = report.format_table()
    assert "Spearman (score, IoU)  " in table and "+1.00" in table
    assert len({len(line) for line in table.splitlines()}) == 1
    one = report_for({"a": [(Box(0, 0, 50, 50), 0.9)]}, GT)
    assert one.n_regions == 1 and math.isnan(one.spearman)
    assert "n/a" in EvalReport(1, 0, 1.0, 1.0, 1.0, 1.0).format_table().splitlines()[-1]
