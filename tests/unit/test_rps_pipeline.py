"""What rps needs of the pipeline: the output tokens, masks finer than the patch grid, class
labels on regions, a paper fit served under preset paper (tiny random ViT)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from zerolabel import geometry, methods
from zerolabel.discovery import FUNCTIONS, ObjectMask
from zerolabel.fitted import Fitted, save_fitted
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import ModelStore
from zerolabel.settings import WorkerSettings
from zerolabel.vit import features
from zerolabel.vit.backbone import load_backbone

BACKBONE = "vit_small_patch16_224"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_backbone(BACKBONE, device="cpu", random_weights=True, model_kwargs={"depth": 2})


def image(hw: tuple[int, int], seed: int = 0) -> LoadedImage:
    pixels = np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)
    return LoadedImage("x.png", pixels, hw, hashlib.sha256(pixels.tobytes()).hexdigest())


def store_for(settings: WorkerSettings, backbone) -> ModelStore:
    store = ModelStore(settings)
    store._backbones[(BACKBONE, "dino")] = backbone
    return store


def test_the_tokens_are_the_final_norm_output_of_the_same_pass(tiny):
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    extracted = features.extract(tiny, images)
    with torch.inference_mode():
        reference = tiny.model.forward_features(images)  # timm's own forward, native size
    prefix = tiny.model.num_prefix_tokens
    for feat, tokens in zip(extracted, reference, strict=True):
        assert feat.tokens.shape == (196, 384) and feat.tokens.dtype == torch.float32
        torch.testing.assert_close(feat.tokens, tokens[prefix:], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(feat.cls_output, tokens[0], rtol=1e-5, atol=1e-5)


@pytest.fixture
def fine_probe(monkeypatch):
    """A registered method returning a mask of 4 x 4 cells per patch, labelled, and the tokens
    it was given."""
    seen: dict[str, torch.Tensor] = {}

    def probe(keys, grid_hw, *, tokens):
        seen["tokens"] = tokens
        mask = torch.zeros(grid_hw[0] * 4, grid_hw[1] * 4, dtype=torch.bool)
        mask[3:10, 5:14] = True  # cells of 4 px: rows 12..40 px, cols 20..56 px
        return [ObjectMask(mask, 0.5, label="cat")]

    info = methods.MethodInfo(
        "fineprobe",
        methods.MethodKind.FEATURES,
        (),
        default_max_side=None,
        summary="test",
        inputs=frozenset({"tokens"}),
    )
    monkeypatch.setitem(methods.METHODS, "fineprobe", info)
    monkeypatch.setitem(FUNCTIONS, "fineprobe", probe)
    return seen


def test_a_mask_of_cells_per_patch_and_its_label_reach_the_region(fine_probe, tiny):
    settings = WorkerSettings(method="fineprobe", backbone=BACKBONE, weights_tag="random")
    runner = store_for(settings, tiny).runner(settings.spec())
    [[region]] = runner.run([image((64, 64))])
    assert region.box.to_list() == [20.0, 12.0, 56.0, 40.0]  # not on the 16 px patch grid
    assert region.label == "cat" and fine_probe["tokens"].shape == (16, 384)
    assert region.mask is not None
    pixels = geometry.rle_decode(region.mask)
    assert pixels.sum() == 28 * 36 and pixels[12:40, 20:56].all()


def test_a_mask_of_another_shape_is_refused_naming_the_grid(fine_probe, tiny, monkeypatch):
    def odd(keys, grid_hw, *, tokens):
        return [ObjectMask(torch.ones(grid_hw[0] * 3, grid_hw[1] * 2, dtype=torch.bool), 0.5)]

    monkeypatch.setitem(FUNCTIONS, "fineprobe", odd)
    settings = WorkerSettings(method="fineprobe", backbone=BACKBONE, weights_tag="random")
    with pytest.raises(ValueError, match=r"a \(12, 8\) mask for a 4 x 4 patch grid"):
        store_for(settings, tiny).runner(settings.spec()).run([image((64, 64))])


def test_a_paper_fit_is_served_at_224_with_boxes_off_the_patch_grid(tiny, tmp_path):
    direction = torch.nn.functional.normalize(torch.rand(384), dim=0)
    fit = Fitted("rps", BACKBONE, "random", {"direction": direction}, {}, {"cells_per_patch": 16})
    path = save_fitted(fit, tmp_path)
    settings = WorkerSettings(
        method="rps", backbone=BACKBONE, weights_tag="random", fitted=str(path), device="cpu"
    )
    spec = settings.spec(preset="paper")
    assert spec.square == 224 and spec.preset == "paper"
    runner = store_for(settings, tiny).runner(spec)
    regions = [r for found in runner.run([image((300, 200), s) for s in range(4)]) for r in found]
    assert regions and all(r.method == "rps" and r.label is None for r in regions)
    # boxes in original pixels of a 224 x 224 input: a patch spans 300/14 x 200/14 px, and
    # the paper rule's edges fall inside patches
    step_y, step_x = 300 / 14, 200 / 14
    edges = [
        e / s for r in regions for e, s in zip(r.box.to_list(), (step_x, step_y) * 2, strict=True)
    ]
    assert any(abs(e - round(e)) > 0.05 for e in edges)
