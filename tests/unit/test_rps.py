"""Representer point selection on synthetic features: the direction, its streaming fit, the
method, the authors' box rule (checked against OpenCV), class-wise directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zerolabel.discovery import FUNCTIONS
from zerolabel.discovery.rps import features, foreground_direction, largest_contour_region, rps
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


def rps_on(feats: torch.Tensor, grid_hw: tuple[int, int], **kwargs: object) -> list:
    """rps on synthetic features standing for both the keys and the output tokens."""
    return rps(feats, grid_hw, tokens=feats, **kwargs)


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


def test_the_streaming_fit_weighs_each_image_the_same_as_the_authors_do():
    generator = torch.Generator().manual_seed(1)
    images = [
        torch.randn(n, 16, generator=generator) * torch.rand(n, 1, generator=generator) * 4
        for n in (12, 35, 7, 64)  # images of different sizes
    ]
    sums = DirectionSums()
    for keys in images:
        sums.add(keys)
    assert (sums.images, sums.patches) == (4, 118)
    np.testing.assert_allclose(
        sums.direction().numpy(), numpy_image_direction(images), rtol=1e-5, atol=1e-6
    )
    patch_weighted = numpy_direction(torch.cat(images).double().numpy())
    assert not np.allclose(sums.direction().numpy(), patch_weighted, atol=1e-3)


def numpy_image_direction(images: list[torch.Tensor]) -> np.ndarray:
    """The authors' fit: ``v`` and ``u`` are means over images of per-image means."""
    arrays = [image.double().numpy() for image in images]
    v = np.mean([a.mean(axis=0) for a in arrays], axis=0)
    u = np.mean([(a / np.linalg.norm(a, axis=1, keepdims=True)).mean(axis=0) for a in arrays], 0)
    w = v - u * np.linalg.norm(v) / np.linalg.norm(u)
    return w / np.linalg.norm(w)


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
        sums.add(features(object_scene((10, 10), train_block, seed=10 + k)[0]))
    keys, planted = object_scene(grid_hw, block, seed=seed)
    [obj] = rps_on(keys, grid_hw, direction=sums.direction())
    assert torch.equal(obj.mask, planted)
    assert 0.0 < obj.score <= 1.0


def test_scores_are_ordered_by_the_planted_contrast():
    grid_hw, block = (10, 10), (slice(3, 7), slice(2, 6))
    direction = F.normalize(torch.eye(32)[1] - torch.eye(32)[0], dim=0)
    scores = []
    for away in (0.0, 0.5, 1.0):  # the object turns towards the direction
        keys, planted = object_scene(grid_hw, block, seed=4, away=away)
        [obj] = rps_on(keys, grid_hw, direction=direction)
        assert torch.equal(obj.mask, planted)
        scores.append(obj.score)
    assert scores == sorted(scores) and scores[0] < scores[-1]


def test_the_threshold_cuts_the_normalised_map():
    keys = torch.zeros(6, 2)
    keys[:, 0] = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # cos rises along the row
    keys[:, 1] = 1.0 - keys[:, 0]
    direction = torch.tensor([1.0, 0.0])
    low = rps_on(keys, (1, 6), direction=direction, threshold=0.2)[0].mask
    high = rps_on(keys, (1, 6), direction=direction, threshold=0.9)[0].mask
    assert low.sum() > high.sum() >= 1 and bool(high[0, 5])


@pytest.mark.parametrize("constant", [0.0, 1.0], ids=["zero-keys", "equal-keys"])
def test_featureless_keys_give_nothing(constant):
    keys = torch.full((64, 16), constant)
    assert rps_on(keys, (8, 8), direction=F.normalize(torch.ones(16), dim=0)) == []


def test_nothing_pointing_towards_the_direction_gives_nothing():
    keys, _ = object_scene((8, 8), (slice(2, 5), slice(2, 5)), seed=7)
    away = -F.normalize(keys.abs().sum(0), dim=0)  # every key has a negative cosine with it
    assert rps_on(keys.abs(), (8, 8), direction=away) == []


def test_a_direction_of_another_width_is_refused():
    with pytest.raises(ValueError, match="fit it again"):
        rps_on(torch.randn(12, 8), (3, 4), direction=torch.ones(16))


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


# --- the authors' features, box rule and class-wise mode -----------------------------------


def bilinear_corners(grid: np.ndarray, cells: int) -> np.ndarray:
    """Bilinear upsampling with aligned corners, written out: output pixel ``y`` of ``H = h c``
    reads the grid at ``y (h - 1) / (H - 1)``."""

    def axis(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = n * cells
        src = np.arange(out) * (n - 1) / (out - 1) if n > 1 else np.zeros(out)
        low = np.minimum(np.floor(src).astype(int), max(n - 2, 0))
        return low, np.minimum(low + 1, n - 1), src - low

    (y0, y1, fy), (x0, x1, fx) = axis(grid.shape[0]), axis(grid.shape[1])
    rows = grid[y0] * (1 - fy)[:, None] + grid[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx)[None, :] + rows[:, x1] * fx[None, :]


def authors_box(cosine: np.ndarray, grid_hw, cells: int, threshold: float):
    """The authors' box, computed independently with OpenCV: ReLU, min-max, bilinear upsample
    (corners aligned), uint8, ``> int(t * max)``, the largest contour's bounding rectangle."""
    import cv2  # OpenCV comes with the dev install (label-studio-sdk): never skipped

    act = np.maximum(cosine.reshape(grid_hw), 0.0).astype(np.float32)
    normalised = (act - act.min()) / (act.max() - act.min())
    gray = (bilinear_corners(normalised, cells) * 255).astype(np.float32).astype(np.uint8)
    _, binary = cv2.threshold(gray, int(threshold * np.max(gray)), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return (x, y, x + w, y + h)


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.numpy().any(axis=1))
    cols = np.flatnonzero(mask.numpy().any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def tokens_with_cosines(cosines: torch.Tensor, direction_dim: int = 8) -> tuple[torch.Tensor, ...]:
    """Non-negative tokens whose cosine with the direction ``e0 + e1`` (normalised) is
    ``cosines``: each token is a unit vector mixing that direction with ``e2``."""
    direction = F.normalize(torch.eye(direction_dim)[0] + torch.eye(direction_dim)[1], dim=0)
    along = cosines.clamp(0.0, 1.0)[:, None]
    tokens = along * direction + (1 - along**2).sqrt() * torch.eye(direction_dim)[2]
    return tokens, direction


def test_the_features_are_the_tokens_through_a_relu():
    tokens = torch.tensor([[1.0, -2.0, 0.5], [-0.1, 0.0, 3.0]])
    assert torch.equal(features(tokens), torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 3.0]]))


def test_a_representer_value_per_feature_rebuilds_the_direction():
    """``w* = sum_i a_i f_i``: the representer values are the weights of the closed form."""
    generator = torch.Generator().manual_seed(5)
    images = [
        torch.rand(n, 6, generator=generator) * torch.rand(n, 1, generator=generator) * 3
        for n in (9, 20, 4)
    ]
    sums = DirectionSums()
    for image in images:
        sums.add(image)
    rebuilt = sum(
        sums.representer_value(float(f.norm()), image.shape[0]) * f.double()
        for image in images
        for f in image
    )
    np.testing.assert_allclose(rebuilt.numpy(), sums.direction().numpy(), atol=1e-6)
    longest = max((f for image in images for f in image), key=lambda f: float(f.norm()))
    assert sums.representer_value(float(longest.norm()), 4) > 0  # long features pull


@pytest.mark.parametrize(("grid_hw", "cells", "seed"), [((4, 5), 16, 0), ((7, 7), 8, 1)])
@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_the_paper_rule_boxes_the_upsampled_map_as_the_authors_code(
    grid_hw, cells, seed, threshold
):
    h, w = grid_hw
    rng = np.random.default_rng(seed)
    cosines = torch.from_numpy(rng.uniform(-0.2, 1.0, h * w).astype(np.float32))
    tokens, direction = tokens_with_cosines(cosines)
    keys = torch.randn(h * w, 4)
    [obj] = rps(
        keys,
        grid_hw,
        tokens=tokens,
        direction=direction,
        threshold=threshold,
        cells_per_patch=cells,
    )
    assert obj.mask.shape == (h * cells, w * cells)
    cos = (F.normalize(tokens, dim=1) @ direction).numpy()
    assert mask_box(obj.mask) == authors_box(cos, grid_hw, cells, threshold)


def test_the_largest_contour_is_the_largest_polygon_not_the_most_pixels():
    """A one-pixel diagonal line holds more pixels than a 3 x 3 block, but its contour encloses
    no area (OpenCV's contourArea): the block wins. Diagonal neighbours join one region."""
    binary = torch.zeros(12, 12, dtype=torch.bool)
    for i in range(11):
        binary[i, i] = True  # 11 pixels, 8-connected, area 0
    binary[0:3, 8:11] = True  # 9 pixels, area 4
    region = largest_contour_region(binary)
    assert mask_box(region) == (8, 0, 11, 3) and int(region.sum()) == 9
    ring = torch.zeros(7, 7, dtype=torch.bool)
    ring[1:6, 1:6] = True
    ring[2:5, 2:5] = False  # a hole: the contour encloses it
    assert int(largest_contour_region(ring).sum()) == 25


def test_largest_contour_agrees_with_opencv_on_random_maps():
    import cv2

    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(300):
        binary = rng.random(tuple(rng.integers(3, 24, 2))) < rng.uniform(0.2, 0.8)
        contours, _ = cv2.findContours(
            binary.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE
        )
        areas = sorted(cv2.contourArea(c) for c in contours)
        if len(areas) > 1 and areas[-1] == areas[-2]:
            continue  # equal areas: which one is first is OpenCV's order
        x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
        assert mask_box(largest_contour_region(torch.from_numpy(binary))) == (x, y, x + w, y + h)
        compared += 1
    assert compared > 250


def test_the_threshold_is_the_requests_else_the_fits_else_one_half():
    cosines = torch.tensor([0.0, 0.3, 0.45, 0.55, 0.7, 1.0])
    tokens, direction = tokens_with_cosines(cosines)

    def cut(**kwargs: object) -> int:
        [obj] = rps(torch.zeros(6, 2), (1, 6), tokens=tokens, direction=direction, **kwargs)
        return int(obj.mask.sum())

    assert cut() == 3  # 0.5 keeps the patches at 0.55, 0.7 and 1.0
    assert cut(picked_threshold=0.4) == 4 and cut(threshold=0.9, picked_threshold=0.4) == 1
    assert cut(threshold=-1.0, picked_threshold=0.4) == 4 and cut(threshold=0.6) == 2


def test_a_class_wise_fit_labels_the_region_with_the_class_that_finds_it_best():
    grid_hw, block = (8, 8), (slice(2, 5), slice(3, 6))
    dim = 8
    tokens = torch.eye(dim)[0].repeat(64, 1) * 0.5  # background along e0, short
    object_cells = torch.zeros(grid_hw, dtype=torch.bool)
    object_cells[block] = True
    tokens[object_cells.flatten()] = torch.eye(dim)[2] * 3.0  # the object along e2, long
    directions = torch.stack([torch.eye(dim)[1], F.normalize(torch.eye(dim)[2] + 0.1, dim=0)])
    [obj] = rps(
        torch.zeros(64, 2), grid_hw, tokens=tokens, direction=directions, labels=["cat", "car"]
    )
    assert obj.label == "car" and torch.equal(obj.mask, object_cells)
    [plain] = rps(torch.zeros(64, 2), grid_hw, tokens=tokens, direction=directions[1])
    assert plain.label is None and torch.equal(plain.mask, object_cells)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"labels": ["a"]}, "names 1 classes for 2 directions", id="labels"),
        pytest.param({"labels": "ab"}, "a list of names", id="a-string"),
        pytest.param({"labels": ["a", "b" * 257]}, "1 to 256 characters", id="long-name"),
        pytest.param({}, "2 directions but no class names", id="no-labels"),
        pytest.param({"labels": ["a", "b"], "picked_threshold": 1.5}, "lie in", id="threshold"),
        pytest.param({"labels": ["a", "b"], "cells_per_patch": 0}, "cells_per_patch", id="cells"),
        pytest.param(
            {"labels": ["a", "b"], "cells_per_patch": 10_000}, "in \\[1, 32\\]", id="huge-cells"
        ),
    ],
)
def test_fitted_values_the_method_cannot_use_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        rps(
            torch.zeros(4, 2),
            (2, 2),
            tokens=torch.rand(4, 3),
            direction=torch.rand(2, 3),
            **arguments,
        )
