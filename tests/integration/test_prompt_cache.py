"""A worker's feature cache: the batch pass warms it, clicks reuse it (tiny random ViT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from zerolabel.contract import Click, DiscoveryRequest, Prompt, PromptRequest
from zerolabel.pipeline import Discoverer
from zerolabel.queue.runtime import WorkerRuntime
from zerolabel.settings import WorkerSettings

pytestmark = pytest.mark.integration


def _runtime(tiny_env: dict[str, str], folder: Path, **env: str) -> WorkerRuntime:
    settings = WorkerSettings.from_env({**tiny_env, "ZEROLABEL_LOCAL_ROOTS": str(folder), **env})
    return WorkerRuntime(settings)


def _photo(path: Path, shade: int = 0) -> str:
    rng = np.random.default_rng(shade)
    pixels = (rng.random((160, 240, 3)) * 80 + 60).astype(np.uint8)
    pixels[40:120, 80:160] = (220, 40 + shade, 40)
    Image.fromarray(pixels).save(path)
    return str(path)


def _no_forward(self, image):  # noqa: ANN001 - stands in for Discoverer.extract
    raise AssertionError("a click on a cached image ran a forward pass")


def test_the_batch_pass_warms_the_cache_and_clicks_need_no_forward_pass(
    tiny_env, tmp_path, monkeypatch
):
    runtime = _runtime(tiny_env, tmp_path, ZEROLABEL_METHOD="maskcut")
    request = DiscoveryRequest(runtime.settings.spec(masks=True), _photo(tmp_path / "a.png"), 1)
    assert runtime.discover(request).regions is not None  # the task opened: its pre-label
    assert len(runtime.features) == 1
    monkeypatch.setattr(Discoverer, "extract", _no_forward)
    asked = PromptRequest(request, Prompt((Click(0.5, 0.5),)))
    first, again = runtime.prompt(asked), runtime.prompt(asked)
    assert first.error is None and len(first.regions) == 1
    assert first.regions == again.regions and first.image_hw == (160, 240)


def test_a_first_click_on_an_unseen_image_pays_one_forward_pass(tiny_env, tmp_path, monkeypatch):
    runtime = _runtime(tiny_env, tmp_path)
    request = DiscoveryRequest(runtime.settings.spec(masks=True), _photo(tmp_path / "b.png"), 2)
    passes = []
    extract = Discoverer.extract

    def counted(self, image):  # noqa: ANN001
        passes.append(image.sha256)
        return extract(self, image)

    monkeypatch.setattr(Discoverer, "extract", counted)
    for x in (0.5, 0.45, 0.55):
        assert runtime.prompt(PromptRequest(request, Prompt((Click(x, 0.5),)))).regions
    assert len(passes) == 1


def test_the_cache_holds_no_more_than_its_bound(tiny_env, tmp_path):
    runtime = _runtime(tiny_env, tmp_path, ZEROLABEL_FEATURE_CACHE_MB="1")
    spec = runtime.settings.spec(masks=True)
    for shade in range(6):
        path = _photo(tmp_path / f"{shade}.png", shade)
        runtime.prompt(
            PromptRequest(DiscoveryRequest(spec, path, shade), Prompt((Click(0.5, 0.5),)))
        )
    assert 0 < len(runtime.features) < 6
    assert runtime.features._bytes <= 2**20


def test_a_click_that_cannot_be_answered_is_an_error_result_not_a_crash(tiny_env, tmp_path):
    runtime = _runtime(tiny_env, tmp_path)
    spec = runtime.settings.spec(masks=True)
    missing = DiscoveryRequest(spec, str(tmp_path / "missing.png"), 3)
    gone = runtime.prompt(PromptRequest(missing, Prompt((Click(0.5, 0.5),))))
    assert gone.regions == [] and gone.error and "missing.png" in gone.error
    background = DiscoveryRequest(spec, _photo(tmp_path / "c.png"), 4)
    only_negative = runtime.prompt(PromptRequest(background, Prompt((Click(0.5, 0.5, False),))))
    assert only_negative.error and "click on the object" in only_negative.error
