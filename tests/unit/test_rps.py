"""Representer point selection on synthetic keys: the direction, its streaming fit, the method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.rps import foreground_direction, rps
from zerolabel.errors import WeightsError
from zerolabel.fitted import Fitted, save_fitted
from zerolabel.loop.fit_rps import DirectionSums
from zerolabel.pipeline import ModelStore
from zerolabel.settings import WorkerSettings

from tests.unit.synthetic import planted_keys


def object_scene(grid_hw, block, *, seed, norm=3.0, away=0.3):
    """Planted keys whose object features are ``norm`` times longer (objects stand out)."""
    scene = planted_keys(grid_hw, [block], away_from_background=away, seed=seed)
    keys = scene.keys.clone()
    keys[scene.objects[0].flatten()] *= norm
    return keys, scene.objects[0]


def numpy_direction(features: np.ndarray) -> np.ndarray:
    """The published formula, computed here independently in float64."""
    v = features.mean(axis=0)
    u = (features / np.linalg.norm(features, axis=1, keepdims=True)).mean(axis=0)
    w = v - u * np.linalg.norm(v) / np.linalg.norm(u)
    return w / np.linalg.norm(w)


def test_the_direction_is_the_norm_weighted_minus_the_plain_mean():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 24)) * rng.uniform(0.2, 5.0, size=(500, 1))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    direction = foreground_direction(
        torch.from_numpy(features.mean(axis=0)), torch.from_numpy(unit.mean(axis=0))
    )
    np.testing.assert_allclose(direction.numpy(), numpy_direction(features), rtol=1e-5, atol=1e-6)
    assert direction.dtype == torch.float32 and float(direction.norm()) == pytest.approx(1.0)


def test_the_streaming_fit_equals_the_one_shot_computation():
    generator = torch.Generator().manual_seed(1)
    images = [
        torch.randn(n, 16, generator=generator) * torch.rand(n, 1, generator=generator) * 4
        for n in (12, 35, 7, 64)  # images of different sizes
    ]
    sums = DirectionSums()
    for keys in images:
        sums.add(keys)
    everything = torch.cat(images).double().numpy()
    assert (sums.images, sums.patches) == (4, 118)
    np.testing.assert_allclose(sums.direction().numpy(), numpy_direction(everything), atol=1e-6)


def test_features_of_one_length_give_no_direction():
    keys = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    sums = DirectionSums()
    sums.add(keys * 2.5)
    with pytest.raises(ValueError, match="same length"):
        sums.direction()
    with pytest.raises(ValueError, match="no image could be read"):
        DirectionSums().direction()


@pytest.mark.parametrize(
    ("grid_hw", "block", "seed"),
    [
        pytest.param((8, 8), (slice(2, 5), slice(3, 6)), 0, id="centre"),
        pytest.param((12, 16), (slice(0, 4), slice(11, 16)), 1, id="corner"),
        pytest.param((30, 40), (slice(10, 22), slice(5, 19)), 2, id="1200-patches"),
    ],
)
def test_a_direction_fitted_on_a_dataset_finds_the_planted_object_exactly(grid_hw, block, seed):
    sums = DirectionSums()
    for k, train_block in enumerate([(slice(1, 4), slice(1, 5)), (slice(3, 8), slice(2, 4))]):
        sums.add(object_scene((10, 10), train_block, seed=10 + k)[0])
    keys, planted = object_scene(grid_hw, block, seed=seed)
    [obj] = rps(keys, grid_hw, direction=sums.direction())
    assert torch.equal(obj.mask, planted)
    assert 0.0 < obj.score <= 1.0


def test_scores_are_ordered_by_the_planted_contrast():
    grid_hw, block = (10, 10), (slice(3, 7), slice(2, 6))
    direction = F.normalize(torch.eye(32)[1] - torch.eye(32)[0], dim=0)
    scores = []
    for away in (0.0, 0.5, 1.0):  # the object turns towards the direction
        keys, planted = object_scene(grid_hw, block, seed=4, away=away)
        [obj] = rps(keys, grid_hw, direction=direction)
        assert torch.equal(obj.mask, planted)
        scores.append(obj.score)
    assert scores == sorted(scores) and scores[0] < scores[-1]


def test_the_threshold_cuts_the_normalised_map():
    keys = torch.zeros(6, 2)
    keys[:, 0] = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # cos rises along the row
    keys[:, 1] = 1.0 - keys[:, 0]
    direction = torch.tensor([1.0, 0.0])
    low = rps(keys, (1, 6), direction=direction, threshold=0.2)[0].mask
    high = rps(keys, (1, 6), direction=direction, threshold=0.9)[0].mask
    assert low.sum() > high.sum() >= 1 and bool(high[0, 5])


@pytest.mark.parametrize("constant", [0.0, 1.0], ids=["zero-keys", "equal-keys"])
def test_featureless_keys_give_nothing(constant):
    keys = torch.full((64, 16), constant)
    assert rps(keys, (8, 8), direction=F.normalize(torch.ones(16), dim=0)) == []


def test_nothing_pointing_towards_the_direction_gives_nothing():
    keys, _ = object_scene((8, 8), (slice(2, 5), slice(2, 5)), seed=7)
    away = -F.normalize(keys.abs().sum(0), dim=0)  # every key has a negative cosine with it
    assert rps(keys.abs(), (8, 8), direction=away) == []


def test_a_direction_of_another_width_is_refused():
    with pytest.raises(ValueError, match="fit it again"):
        rps(torch.randn(12, 8), (3, 4), direction=torch.ones(16))


def test_rps_is_registered():
    assert FUNCTIONS["rps"] is rps


def test_a_fitted_file_of_another_backbone_or_weights_is_refused(tmp_path):
    path = save_fitted(
        Fitted("rps", "dino_vits16", "hub", {"direction": torch.ones(384)}), tmp_path
    )
    for backbone, weights_tag in (("dino_vitb16", None), ("dino_vits16", "mine")):
        settings = WorkerSettings(
            method="rps", backbone=backbone, weights_tag=weights_tag, fitted=str(path)
        )
        spec = settings.spec()
        assert spec.fitted == path.name
        with pytest.raises(WeightsError, match="fitted on dino_vits16 with weights 'hub'"):
            ModelStore(settings).fitted(spec)
    fine = WorkerSettings(method="rps", fitted=str(path))
    assert ModelStore(fine).fitted(fine.spec()) is not None
