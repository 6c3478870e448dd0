"""Fitted files: saved by content digest, bound to their backbone, passed to their method."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from zerolabel import methods
from zerolabel.contract import DiscoverySpec
from zerolabel.discovery import FUNCTIONS, ObjectMask
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.fitted import Fitted, load_fitted, save_fitted
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import Discoverer, ModelStore
from zerolabel.settings import WorkerSettings
from zerolabel.vit.backbone import load_backbone

BACKBONE = "vit_small_patch16_224"


def fit(value: float = 1.0) -> Fitted:
    return Fitted("probe", BACKBONE, "random", {"direction": torch.full((384,), value)}, {"n": 3})


def test_the_file_name_follows_the_content_and_loads_back_equal(tmp_path):
    path = save_fitted(fit(), tmp_path)
    assert path.name == fit().file_name() and path.name.startswith("probe-")
    assert fit(2.0).file_name() != path.name
    loaded = load_fitted(path, kind="probe", backbone=BACKBONE, weights="random")
    assert torch.equal(loaded.tensors["direction"], fit().tensors["direction"])
    assert loaded.meta == {"n": 3} and loaded.file_name() == path.name
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_a_fit_for_another_kind_or_backbone_is_refused_naming_both(tmp_path):
    path = save_fitted(fit(), tmp_path)
    with pytest.raises(WeightsError, match="holds a 'probe' fit, not a 'rps' one"):
        load_fitted(path, kind="rps", backbone=BACKBONE, weights="random")
    with pytest.raises(WeightsError, match=r"fitted on vit_small_patch16_224 .*runs dino_vitb8"):
        load_fitted(path, kind="probe", backbone="dino_vitb8", weights="random")
    torch.save({"not": "ours"}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a zerolabel fitted file"):
        load_fitted(tmp_path / "other.pt", kind="probe", backbone=BACKBONE, weights="random")


def test_methods_without_a_fitted_file_keep_their_model_versions():
    spec = DiscoverySpec(method="lost")
    assert dataclasses.asdict(spec)["fitted"] is None
    with pytest.raises(ConfigError, match="method 'lost' takes no fitted file"):
        DiscoverySpec(method="lost", fitted="probe-abc.pt")


@pytest.fixture
def probe_method(monkeypatch):
    """A registered method that reads the attention and a fitted direction."""
    seen: dict[str, torch.Tensor] = {}

    def probe(keys, grid_hw, *, attention, direction, threshold: float = 0.0):
        seen.update(attention=attention, direction=direction)
        mask = torch.zeros(grid_hw, dtype=torch.bool)
        mask[1:3, 1:3] = True
        return [ObjectMask(mask, 0.5)]

    info = methods.MethodInfo(
        "probe",
        methods.MethodKind.FEATURES,
        (methods.Param("threshold", "float", 0.0),),
        default_max_side=None,
        summary="test",
        inputs=frozenset({"attention"}),
        fitted="probe",
        fitted_required=True,
    )
    monkeypatch.setitem(methods.METHODS, "probe", info)
    monkeypatch.setitem(FUNCTIONS, "probe", probe)
    return seen


def test_the_method_gets_the_attention_and_the_fitted_tensors(probe_method, tmp_path):
    path = save_fitted(fit(), tmp_path)
    with pytest.raises(ConfigError, match="needs a fitted probe file: set ZEROLABEL_FITTED"):
        WorkerSettings(method="probe", backbone=BACKBONE, weights_tag="random").validate()
    settings = WorkerSettings(
        method="probe", backbone=BACKBONE, weights_tag="random", fitted=str(path), device="cpu"
    )
    spec = settings.spec()
    assert (
        spec.fitted == path.name
        and spec.model_version()
        != dataclasses.replace(spec, fitted=fit(2.0).file_name()).model_version()
    )
    torch.manual_seed(0)
    backbone = load_backbone(BACKBONE, device="cpu", random_weights=True, model_kwargs={"depth": 2})
    store = ModelStore(settings)
    store._backbones[(BACKBONE, "dino")] = backbone
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    image = LoadedImage("x.png", pixels, (64, 64), hashlib.sha256(pixels.tobytes()).hexdigest())
    [[region]] = store.runner(spec).run([image])
    assert region.box.to_list() == [16.0, 16.0, 48.0, 48.0]
    assert probe_method["attention"].shape == (6, 16)  # heads x patches of a 64 px image
    assert torch.equal(probe_method["direction"], fit().tensors["direction"])
    # A request naming another fit than the worker's is refused, as for other weights.
    other = dataclasses.replace(spec, fitted=fit(2.0).file_name())
    with pytest.raises(WeightsError, match="give backend and workers the same ZEROLABEL_FITTED"):
        store.runner(other)
    with pytest.raises(ConfigError, match="disagree"):
        Discoverer(backbone, spec)


def _old_file(
    tmp_path: Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict
) -> tuple[Path, Fitted]:
    """A fitted file as zerolabel wrote it before revisions and arguments existed."""
    payload = {
        "format": "zerolabel-fitted",
        "version": 1,
        "kind": kind,
        "backbone": BACKBONE,
        "weights": "random",
        "tensors": tensors,
        "meta": meta,
    }
    old = Fitted(kind, BACKBONE, "random", tensors, meta)
    sha = hashlib.sha256()  # the digest as it was computed then, written out here
    head = {"kind": kind, "backbone": BACKBONE, "weights": "random", "meta": meta}
    sha.update(json.dumps(head, sort_keys=True).encode())
    for name in sorted(tensors):
        sha.update(name.encode())
        sha.update(str(tuple(tensors[name].shape)).encode())
        sha.update(tensors[name].numpy().tobytes())
    path = tmp_path / f"{kind}-{sha.hexdigest()[:12]}.pt"
    torch.save(payload, path)
    return path, old


def test_an_earlier_found_head_still_loads_under_its_name(tmp_path):
    tensors = {"head_weight": torch.ones(384), "head_bias": torch.zeros(1)}
    path, old = _old_file(tmp_path, "found-head", tensors, {"images": 3})
    loaded = load_fitted(path, kind="found-head", backbone=BACKBONE, weights="random")
    assert loaded.file_name() == path.name == old.file_name()  # the same digest as before
    assert loaded.arguments == {} and loaded.meta == {"images": 3}


def test_an_rps_fit_of_the_attention_keys_is_refused_with_what_changed(tmp_path):
    path, _ = _old_file(tmp_path, "rps", {"direction": torch.ones(384)}, {"images": 3})
    with pytest.raises(WeightsError) as refused:
        load_fitted(path, kind="rps", backbone=BACKBONE, weights="random")
    message = str(refused.value)
    assert "revision 1" in message and "reads revision 2" in message
    assert "output tokens" in message and "fit it again with zerolabel rps-fit" in message


def test_arguments_travel_with_the_fit_and_name_it(tmp_path):
    tensors = {"direction": torch.ones(2, 384)}
    arguments = {"labels": ["cat", "dog"], "picked_threshold": 0.37, "cells_per_patch": 16}
    fitted = Fitted("rps", BACKBONE, "random", tensors, {"images": 3}, arguments)
    path = save_fitted(fitted, tmp_path)
    loaded = load_fitted(path, kind="rps", backbone=BACKBONE, weights="random")
    assert loaded.arguments == arguments and loaded.file_name() == path.name
    other = Fitted("rps", BACKBONE, "random", tensors, {"images": 3}, {**arguments, "labels": []})
    assert other.file_name() != path.name
    passed = loaded.method_arguments("cpu")
    assert set(passed) == {"direction", *arguments} and passed["labels"] == ["cat", "dog"]


def test_arguments_a_kind_does_not_take_are_refused(tmp_path):
    tensors = {"direction": torch.ones(384)}
    sneaky = Fitted("rps", BACKBONE, "random", tensors, {}, {"keys": [1, 2]})
    path = save_fitted(sneaky, tmp_path)
    with pytest.raises(WeightsError, match="passes keys to its method, which a 'rps' fit may not"):
        load_fitted(path, kind="rps", backbone=BACKBONE, weights="random")
    found = save_fitted(Fitted("found-head", BACKBONE, "random", tensors, {}, {"x": 1}), tmp_path)
    with pytest.raises(WeightsError, match="allowed: none"):
        load_fitted(found, kind="found-head", backbone=BACKBONE, weights="random")
