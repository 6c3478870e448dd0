"""A photo without structure (black, or one flat colour) gives no region, run after run."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from zerolabel.contract import DiscoverySpec
from zerolabel.io.images import LoadedImage
from zerolabel.pipeline import Discoverer
from zerolabel.vit.backbone import Backbone, load_backbone


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    torch.manual_seed(0)
    return load_backbone(
        "vit_small_patch16_224", device="cpu", random_weights=True, model_kwargs={"depth": 2}
    )


def flat(value: int, hw: tuple[int, int] = (96, 128)) -> LoadedImage:
    pixels = np.full((*hw, 3), value, dtype=np.uint8)
    return LoadedImage("flat.png", pixels, hw, hashlib.sha256(pixels.tobytes()).hexdigest())


@pytest.mark.parametrize("method", ["lost", "tokencut", "maskcut"])
@pytest.mark.parametrize("value", [0, 128])
def test_a_flat_image_gives_no_region_and_no_score_zero_guess(backbone, method, value):
    spec = DiscoverySpec(method=method, backbone="vit_small_patch16_224", weights="random")
    runner = Discoverer(backbone, spec)
    # The method itself still answers (an arbitrary cut of featureless patches, score 0)...
    image = flat(value)
    feats = runner._forward([image], [runner.frame(image)])[0]
    assert [o.score for o in runner.method(feats.k, feats.grid_hw, **spec.params)][:1] == [0.0]
    # ...but no such region leaves the pipeline, however often it runs.
    assert runner.run([image, image]) == [[], []]
