"""rps-fit beyond the direction: the threshold picked from accepted boxes, class-wise
directions, the top representer patches, the preset's input (synthetic features)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from zerolabel import geometry
from zerolabel.contract import Box
from zerolabel.discovery.rps import THRESHOLDS, ForegroundMap, rps
from zerolabel.formats.dataset import ObjectRecord
from zerolabel.loop import fit_rps as fit_module
from zerolabel.loop.fit_rps import IOU_BOUNDS, fit_input, fit_rps, pick_threshold, threshold_hits
from zerolabel.loop.fitting import FitReport, FitSample, SampleFeatures
from zerolabel.vit.features import PatchFeatures

PATCH = 16
GRID = (6, 8)
DIM = 8


def test_the_pick_is_the_best_mean_accuracy_and_the_lowest_threshold_on_ties():
    hits = np.zeros((len(THRESHOLDS), len(IOU_BOUNDS)), dtype=np.int64)
    hits[10] = [4, 2, 0]  # mean 0.5
    hits[30] = [4, 4, 2]  # mean 0.83: the best, first reached here
    hits[31] = [4, 4, 2]
    pick = pick_threshold(hits, images=4)
    assert pick.threshold == THRESHOLDS[30] and pick.accuracy == (1.0, 1.0, 0.5)
    assert pick.mean == pytest.approx(2.5 / 3)
    with pytest.raises(ValueError, match="nothing to pick from"):
        pick_threshold(hits, images=0)


def test_the_picked_threshold_is_the_lowest_one_that_boxes_the_accepted_object():
    """A planted object at 0.9 inside a halo at 0.4625 on a background at 0.1: below the halo's
    normalised level (0.453125) the box holds the halo; from the next swept threshold on it is
    the accepted box exactly."""
    cosine = torch.full(GRID, 0.1)
    cosine[1:5, 2:7] = 0.4625
    cosine[2:4, 3:6] = 0.9
    frame = geometry.Frame((96, 128), (96, 128), PATCH)
    accepted = [Box(3 * PATCH, 2 * PATCH, 6 * PATCH, 4 * PATCH)]
    hits = threshold_hits([ForegroundMap(cosine.flatten(), GRID, 1)], frame, accepted)
    exact = [row for row, t in enumerate(THRESHOLDS) if t >= 0.453125]
    assert hits[exact].all() and not hits[: exact[0], 2].any()
    pick = pick_threshold(hits, images=1)
    assert pick.threshold == THRESHOLDS[exact[0]] == 0.46 and pick.accuracy == (1.0, 1.0, 1.0)


def test_the_accepted_boxes_are_compared_in_the_images_own_pixels():
    """Annotations of a 2x smaller rendering (Label Studio's original size differs) scale."""
    cosine = torch.full(GRID, 0.1)
    cosine[2:4, 3:6] = 0.9
    frame = geometry.Frame((96, 128), (96, 128), PATCH)
    sample = FitSample("x", _never, [ObjectRecord(Box(24, 16, 48, 32), "cat")], (48, 64))
    truth = fit_module._accepted_boxes(sample, frame.original_hw)
    assert truth == [Box(48.0, 32.0, 96.0, 64.0)]
    hits = threshold_hits([ForegroundMap(cosine.flatten(), GRID, 1)], frame, truth)
    assert hits[THRESHOLDS.index(0.5)].all()


def test_the_preset_sizes_the_fit_as_a_spec_sizes_prediction():
    assert fit_input(None, "default") == (1024, None)
    assert fit_input(None, "paper") == (None, 224)  # decoded whole, resized to 224 x 224
    assert fit_input(0, "paper") == (None, None) and fit_input(320, "paper") == (320, None)


# --- a whole fit on planted features (the forward pass stubbed) ----------------------------


def _never() -> Any:
    raise AssertionError("the stub gives features without loading")


class Planted:
    """A stand-in for the backbone (only its patch size is read)."""

    patch_size = PATCH


def scene(block: tuple[slice, slice], axis: int, seed: int) -> torch.Tensor:
    """[N, DIM] tokens: a short background along e0, the object long along ``e_axis``."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.eye(DIM)[0].repeat(GRID[0] * GRID[1], 1) * 0.5
    cells = torch.zeros(GRID, dtype=torch.bool)
    cells[block] = True
    tokens[cells.flatten()] = torch.eye(DIM)[axis] * 3.0
    return tokens + 0.02 * torch.rand(tokens.shape, generator=generator)


BLOCKS = [(slice(1, 3), slice(1, 4)), (slice(2, 5), slice(4, 7)), (slice(0, 2), slice(5, 8))]
CLASSES = {"cat": 2, "car": 3}


def project(annotated: bool = True) -> list[tuple[FitSample, torch.Tensor]]:
    """Six annotated images, three of each class, and two without annotations."""
    items = []
    for index in range(8):
        label = "cat" if index % 2 == 0 else "car"
        block = BLOCKS[index % 3]
        box = Box(
            block[1].start * PATCH,
            block[0].start * PATCH,
            block[1].stop * PATCH,
            block[0].stop * PATCH,
        )
        objects = [ObjectRecord(box, label)] if annotated and index < 6 else None
        sample = FitSample(f"task {index}", _never, objects, (96, 128) if objects else None)
        items.append((sample, scene(block, CLASSES[label], seed=index)))
    return items


@pytest.fixture
def stub_features(monkeypatch):
    """sample_features of fit_rps, giving each sample its planted tokens."""
    tokens_of: dict[str, torch.Tensor] = {}
    passes: list[str] = []

    def fake(backbone, samples, max_side, report: FitReport, *, square=None, what="features"):
        passes.append(what)
        for sample in samples:
            tokens = tokens_of[sample.name]
            feats = PatchFeatures(
                q=tokens,
                k=tokens,
                v=tokens,
                cls_output=tokens[0],
                cls_attention=torch.zeros(1, tokens.shape[0]),
                grid_hw=GRID,
                tokens=tokens,
            )
            report.images += 1
            report.patches += tokens.shape[0]
            yield SampleFeatures(sample, feats, geometry.Frame((96, 128), (96, 128), PATCH))

    monkeypatch.setattr(fit_module, "sample_features", fake)

    def fit(items: list[tuple[FitSample, torch.Tensor]], **kwargs: Any) -> Iterator[Any]:
        tokens_of.update({sample.name: tokens for sample, tokens in items})
        return fit_rps([s for s, _ in items], Planted(), backbone_name="b", weights="w", **kwargs)

    fit.passes = passes  # type: ignore[attr-defined]
    return fit


def test_a_project_with_two_labels_gets_a_direction_each_and_a_picked_threshold(stub_features):
    fitted, report = stub_features(project())
    assert fitted.tensors["direction"].shape == (2, DIM)
    assert fitted.arguments["labels"] == ["car", "cat"] and report.classes == {"car": 3, "cat": 3}
    assert fitted.arguments["cells_per_patch"] == 1
    assert report.pick is not None and report.pick.images == 6
    assert report.pick.accuracy == (1.0, 1.0, 1.0)
    assert fitted.arguments["picked_threshold"] == report.pick.threshold
    assert stub_features.passes == ["features", "picking the threshold"]
    assert fitted.meta["images"] == 8 and fitted.meta["threshold_images"] == 6
    # served: a new image's object is found and labelled with its class
    for label, axis in CLASSES.items():
        block = (slice(3, 5), slice(0, 3))
        tokens = scene(block, axis, seed=40)
        [obj] = rps(tokens, GRID, tokens=tokens, **fitted.method_arguments("cpu"))
        assert obj.label == label and obj.mask[block].all() and int(obj.mask.sum()) == 6


def test_the_top_representers_of_each_class_are_its_objects_patches(stub_features):
    _, report = stub_features(project())
    assert set(report.representers) == {"car", "cat"}
    for label, shown in report.representers.items():
        assert len(shown) == fit_module.REPRESENTERS
        values = [r.value for r in shown]
        assert values == sorted(values, reverse=True) and values[-1] > 0
        for representer in shown:
            index = int(representer.name.split()[-1])
            assert ("cat" if index % 2 == 0 else "car") == label
            block = BLOCKS[index % 3]
            inside = Box(
                block[1].start * PATCH,
                block[0].start * PATCH,
                block[1].stop * PATCH,
                block[0].stop * PATCH,
            )
            box = representer.box
            assert box.width == box.height == PATCH
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1
            assert inside.y0 <= box.y0 and box.y1 <= inside.y1


def test_without_annotations_one_direction_no_threshold_and_one_pass(stub_features):
    fitted, report = stub_features(project(annotated=False))
    assert fitted.tensors["direction"].shape == (DIM,)
    assert "labels" not in fitted.arguments and "picked_threshold" not in fitted.arguments
    assert report.pick is None and set(report.representers) == {"all"}
    assert stub_features.passes == ["features"]


def test_class_agnostic_fits_and_labels_short_of_images_keep_one_direction(stub_features):
    fitted, report = stub_features(project(), classwise=False)
    assert fitted.tensors["direction"].shape == (DIM,) and not report.classes
    assert report.pick is not None  # the threshold is still picked from the accepted boxes
    fitted, _ = stub_features(project(), min_class_images=4)  # 3 images per label
    assert fitted.tensors["direction"].shape == (DIM,)


def test_a_paper_fit_boxes_by_the_authors_rule(stub_features):
    fitted, report = stub_features(project()[:3], preset="paper")  # 3 images, one direction
    assert fitted.arguments["cells_per_patch"] == PATCH and "labels" not in fitted.arguments
    assert fitted.meta["square"] == 224 and fitted.meta["preset"] == "paper"
    assert report.pick is not None and report.pick.accuracy[1] == 1.0
