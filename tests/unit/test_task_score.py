"""Task scores: the mean region score, and detector confidences spread above their threshold."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
from torch import nn
from zerolabel.cad.inference import rescaled_confidence
from zerolabel.contract import Box, DiscoveryResult, Region
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import DetectorRunner
from zerolabel.settings import WorkerSettings

task_score = DiscoveryResult.task_score


def test_the_task_score_is_the_mean_of_its_region_scores():
    assert task_score([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    assert task_score([0.7]) == 0.7  # one region: mean and lowest agree
    assert task_score([]) == 0.0  # nothing found: before every task with a region


def test_weak_regions_pull_a_task_down_in_proportion():
    one_doubtful = [0.1] + [0.9] * 9
    all_doubtful = [0.1] * 10
    one_good = [0.9]
    # The lowest region cannot tell these tasks apart; the mean orders them.
    assert min(one_doubtful) == min(all_doubtful)
    assert task_score(all_doubtful) < task_score(one_doubtful) < task_score(one_good)
    many_weak = [0.95] + [0.05] * 20  # one object found, and a detector's tail of weak boxes
    assert task_score(many_weak) < task_score([0.95, 0.05])


def test_the_task_score_stays_in_the_unit_interval():
    rng = np.random.default_rng(0)
    for size in range(1, 30):
        scores = rng.random(size).tolist()
        value = task_score(scores)
        assert min(scores) <= value <= max(scores) and 0.0 <= value <= 1.0
    assert task_score([1.4, 1.2]) == 1.0 and task_score([-0.3]) == 0.0  # foreign files


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_score_that_is_no_number_is_refused(bad):
    with pytest.raises(ValueError, match="finite numbers"):
        task_score([0.5, bad])


def test_a_result_scores_its_regions():
    regions = [Region(Box(0, 0, 5, 5), s, "maskcut") for s in (0.3, 0.6)]
    assert DiscoveryResult("a.jpg", (10, 10), regions, "v").score == pytest.approx(0.45)


def test_rescaling_maps_the_threshold_to_zero_and_keeps_the_order():
    assert rescaled_confidence(0.5, 0.5) == 0.0
    assert rescaled_confidence(1.0, 0.5) == 1.0
    assert rescaled_confidence(0.75, 0.5) == pytest.approx(0.5)
    assert rescaled_confidence(0.3, 0.0) == pytest.approx(0.3)  # no threshold: unchanged
    assert rescaled_confidence(0.4, 0.5) == 0.0  # below the threshold: never kept anyway
    assert (rescaled_confidence(1.0, 1.0), rescaled_confidence(0.9, 1.0)) == (1.0, 0.0)
    raw = [0.501, 0.503, 0.51, 0.52, 0.6]  # crowded just above the threshold
    spread = [rescaled_confidence(s, 0.5) for s in raw]
    assert spread == sorted(spread) and len(set(spread)) == len(raw)
    assert max(spread) - min(spread) == pytest.approx(2 * (max(raw) - min(raw)))


@pytest.mark.parametrize(("score", "threshold"), [(1.2, 0.5), (0.5, -0.1), (math.nan, 0.5)])
def test_rescaling_refuses_values_outside_the_unit_interval(score, threshold):
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        rescaled_confidence(score, threshold)


class _FixedDetector(nn.Module):
    """Stands in for a detector: the same detections (above any threshold) for every image."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.roi_heads = types.SimpleNamespace(score_thresh=0.05, detections_per_img=100)
        self.anchor = nn.Parameter(torch.zeros(1))
        self.output = {
            "boxes": torch.tensor([[2.0, 2.0, 8.0 + i, 8.0] for i in range(len(scores))]),
            "scores": torch.tensor(scores),
        }

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.output]


def test_the_detector_runner_scores_regions_above_its_threshold():
    settings = WorkerSettings.from_env({"ZEROLABEL_CAD_CHECKPOINT": "cad-test.pt"})
    spec = settings.spec(method="cad", params={"score_threshold": 0.6})
    raw = [0.9, 0.7, 0.61]
    runner = DetectorRunner(_FixedDetector(raw), spec)
    image = LoadedImage("img", np.zeros((20, 20, 3), np.uint8), (20, 20), "sha")
    [regions] = runner.run([image])
    scores = [r.score for r in regions]
    assert scores == pytest.approx([(s - 0.6) / 0.4 for s in raw], abs=1e-6)  # float32
    result = DiscoveryResult("img", (20, 20), regions, runner.model_version)
    assert result.score == pytest.approx(sum(scores) / 3)
    assert min(scores) < 0.05 < result.score  # the lowest sits at the threshold, the mean not
