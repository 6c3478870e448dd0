"""Preset ``paper``: each method's authors' input as one named option, in the spec, the
model_version, the project options and the command line; and the geometry of DSS's crop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from zerolabel import methods, pipeline, refine
from zerolabel.cli.main import main
from zerolabel.contract import DiscoverySpec
from zerolabel.errors import ConfigError
from zerolabel.geometry import (
    Frame,
    mask_to_box,
    patch_mask_to_box,
    patch_mask_to_pixel_mask,
)
from zerolabel.io.images import LoadedImage
from zerolabel.labelstudio.options import ProjectOptions, project_side_limit
from zerolabel.pipeline import Discoverer
from zerolabel.settings import BackendSettings
from zerolabel.vit import preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# The authors' inputs, from their papers and code: (square side, crop to whole patches).
AUTHORS_INPUTS = {
    "lost": (None, False),
    "tokencut": (None, False),
    "maskcut": (480, False),
    "cad": (None, False),
    "found": (None, False),
    "dinoseg": (None, False),
    "dss": (None, True),
    "promerge": (480, False),
}


# --- the spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "authors"), AUTHORS_INPUTS.items())
def test_each_paper_preset_is_its_authors_input(method, authors):
    square, crop = authors
    spec = DiscoverySpec(method=method, preset="paper")
    assert spec.square == square
    assert spec.effective_max_side() is None  # full resolution, or a square from the full decode
    assert spec.effective_crop() is crop
    assert spec.params == {} and spec.backbone == DiscoverySpec().backbone  # the input only


def test_every_method_registers_its_authors_input():
    # rps's (a 224 x 224 square, with its own features) is pinned with the method's tests.
    registered = {n for n, i in methods.METHODS.items() if i.paper_input is not None}
    assert registered == set(methods.METHOD_NAMES) and set(AUTHORS_INPUTS) <= registered


@pytest.mark.parametrize("method", AUTHORS_INPUTS)
def test_the_paper_preset_is_another_model_version(method):
    default = DiscoverySpec(method=method)
    paper = DiscoverySpec(method=method, preset="paper")
    assert paper.model_version() != default.model_version()
    assert paper.model_version().startswith(f"zerolabel-{method}-")


def test_the_default_preset_keeps_the_versions_and_wire_form_of_specs_before_presets():
    spec = DiscoverySpec(method="dss")
    assert DiscoverySpec(method="dss", preset="default") == spec
    assert "preset" not in spec.to_dict()  # workers of the version before presets read it
    assert DiscoverySpec.from_dict(spec.to_dict()) == spec
    assert spec.effective_max_side() == 1024 and not spec.effective_crop()


def test_equal_inputs_are_equal_specs_and_survive_the_wire():
    paper = DiscoverySpec(method="maskcut", preset="paper")
    assert paper == DiscoverySpec(method="maskcut", preset="paper", square=480)
    assert paper.model_version() == DiscoverySpec(**paper.to_dict()).model_version()
    dss = DiscoverySpec(method="dss", preset="paper")
    assert dss == DiscoverySpec.from_dict(dss.to_dict()) and dss.max_side == 0


def test_a_size_given_with_the_preset_replaces_its_size_but_not_its_crop():
    capped = DiscoverySpec(method="dss", preset="paper", max_side=512)
    assert capped.effective_max_side() == 512 and capped.effective_crop()
    assert capped.model_version() != DiscoverySpec(method="dss", max_side=512).model_version()
    aspect = DiscoverySpec(method="promerge", preset="paper", max_side=640)
    assert aspect.square is None and aspect.effective_max_side() == 640


@pytest.mark.parametrize("preset", ["authors", "Paper", "", None, 1])
def test_an_unknown_preset_is_refused_with_the_known_ones(preset):
    with pytest.raises(ConfigError, match="preset must be one of default, paper"):
        DiscoverySpec(method="lost", preset=preset)


def test_a_method_without_a_registered_paper_input_refuses_the_preset():
    unregistered = methods.MethodInfo("plain", methods.MethodKind.FEATURES, (), 1024, "a method")
    with pytest.raises(ConfigError, match="method 'plain' has no paper preset"):
        unregistered.preset_input("paper")
    assert unregistered.preset_input("default") == methods.InputSetting(max_side=1024)


# --- project options --------------------------------------------------------------------------


def project_spec(extra: dict[str, object], **env: str) -> DiscoverySpec:
    settings = BackendSettings.from_env(env)
    return ProjectOptions.parse(extra).spec(settings, masks=True)


def test_a_project_asks_for_the_preset_by_name():
    spec = project_spec({"method": "promerge", "preset": "paper"})
    assert spec == DiscoverySpec(
        method="promerge", preset="paper", masks=True, weights=spec.weights
    )


@pytest.mark.parametrize("preset", ["authors", 1, None, ["paper"]])
def test_a_project_preset_is_refused_unless_it_is_known(preset):
    with pytest.raises(ConfigError, match='extra param "preset" must be one of "default", "paper"'):
        ProjectOptions.parse({"method": "lost", "preset": preset})


def test_a_project_paper_preset_stays_within_the_project_bounds():
    # Full resolution is the operator's choice: a project's paper preset is capped to the
    # project's patch bound of its backbone...
    dss = project_spec({"method": "dss", "preset": "paper"})
    assert dss.effective_max_side() == project_side_limit("dino_vits16") and dss.effective_crop()
    # ...unless the operator set the size, or the project gave one in bounds...
    assert project_spec({"method": "dss", "preset": "paper"}, ZEROLABEL_MAX_SIDE="0").max_side == 0
    assert project_spec({"method": "lost", "preset": "paper", "max_side": 640}).max_side == 640
    # ...and the authors' squares are bounded already.
    assert project_spec({"method": "maskcut", "preset": "paper"}).square == 480


def test_the_preset_is_a_model_key_zerolabel_use_replaces():
    from zerolabel.labelstudio.options import MODEL_KEYS

    assert "preset" in MODEL_KEYS


# --- command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["predict", "a.png"], ["eval"]])
def test_predict_and_eval_refuse_an_unknown_preset(command):
    result = CliRunner().invoke(main, [*command, "--preset", "authors"], env={})
    assert result.exit_code == 2
    assert "'authors' is not one of 'default', 'paper'" in result.output


def test_eval_takes_the_preset_for_method_runs_only(tmp_path):
    predictions = tmp_path / "coco.json"
    predictions.write_text("{}")
    result = CliRunner().invoke(
        main, ["eval", str(predictions), "--gt", str(predictions), "--preset", "paper"], env={}
    )
    assert result.exit_code == 2 and "--preset sets the input of --method runs" in result.output


def test_predict_builds_its_spec_with_the_preset(monkeypatch, tmp_path):
    specs: list[DiscoverySpec] = []

    def load_runner(store: object, settings: object, spec: DiscoverySpec) -> object:
        specs.append(spec)
        raise ConfigError("stop here")

    monkeypatch.setattr("zerolabel.loop.predict.load_runner", load_runner)
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    args = ["predict", str(image), "-o", str(tmp_path / "out"), "-m", "dss", "--preset", "paper"]
    result = CliRunner().invoke(main, args, env={})
    assert result.exit_code == 1 and "stop here" in result.output
    assert [s.preset for s in specs] == ["paper"] and specs[0].effective_crop()


# --- the crop's geometry ----------------------------------------------------------------------


def cells(grid_hw: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(grid_hw, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_a_cropped_frame_keeps_whole_patches_only():
    frame = Frame((100, 150), (100, 150), 16, crop=True)
    assert frame.grid_hw == (6, 9) and frame.padded_hw == (96, 144)
    assert Frame((100, 150), (100, 150), 16).grid_hw == (7, 10)  # padded: a partial last patch
    assert Frame((10, 40), (10, 40), 16, crop=True).grid_hw == (1, 2)  # under a patch: padded


def test_crop_and_pad_map_the_same_patch_to_the_same_pixels():
    # At full resolution patch (r, c) covers pixels [16 r, 16 r + 16) either way; only the
    # padded frame has a last, partial row and column, which a cropped one never sees.
    crop, pad = Frame((100, 150), (100, 150), 16, crop=True), Frame((100, 150), (100, 150), 16)
    inner = (slice(1, 3), slice(3, 6))
    for frame in (crop, pad):
        box = patch_mask_to_box(cells(frame.grid_hw, *inner), frame)
        assert box is not None and box.to_list() == [48.0, 16.0, 96.0, 48.0]
    last = patch_mask_to_box(cells(crop.grid_hw, slice(5, 6), slice(8, 9)), crop)
    assert last is not None and last.to_list() == [128.0, 80.0, 144.0, 96.0]
    edge = patch_mask_to_box(cells(pad.grid_hw, slice(6, 7), slice(9, 10)), pad)
    assert edge is not None and edge.to_list() == [144.0, 96.0, 150.0, 100.0]


@pytest.mark.parametrize(
    ("original_hw", "content_hw"),
    [
        ((100, 150), (100, 150)),
        ((300, 450), (100, 150)),
        ((333, 500), (215, 323)),
        ((47, 70), (47, 70)),
    ],
)
def test_a_cropped_frame_maps_masks_and_boxes_back_to_the_original_pixels(original_hw, content_hw):
    frame = Frame(original_hw, content_hw, 16, crop=True)
    gh, gw = frame.grid_hw
    mask = cells(frame.grid_hw, slice(gh // 2, gh), slice(gw // 3, gw))  # up to the last patch
    pixels = patch_mask_to_pixel_mask(mask, frame)
    assert pixels.shape == original_hw
    assert mask_to_box(pixels) == patch_mask_to_box(mask, frame)
    # No original pixel whose centre falls in the cut-off remainder belongs to the mask.
    (h, w), (ch, cw) = original_hw, content_hw
    seen_h = np.flatnonzero((np.arange(h) + 0.5) * ch / h < gh * 16)
    seen_w = np.flatnonzero((np.arange(w) + 0.5) * cw / w < gw * 16)
    assert not pixels[seen_h[-1] + 1 :].any() and not pixels[:, seen_w[-1] + 1 :].any()
    assert pixels[seen_h[-1], seen_w[-1]]  # the last pixel the network saw is in


def normalised(pixels: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
    return (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def test_the_cropped_input_is_the_image_cut_to_whole_patches():
    pixels = np.random.default_rng(0).integers(0, 256, (100, 150, 3)).astype(np.uint8)
    cropped = preprocess.to_input(pixels, Frame((100, 150), (100, 150), 16, crop=True), MEAN, STD)
    assert cropped.shape == (3, 96, 144)
    assert torch.allclose(cropped, normalised(pixels[:96, :144]), atol=1e-6)
    padded = preprocess.to_input(pixels, Frame((100, 150), (100, 150), 16), MEAN, STD)
    assert padded.shape == (3, 112, 160) and torch.equal(padded[:, :96, :144], cropped)
    tiny = pixels[:10, :40]
    small = preprocess.to_input(tiny, Frame((10, 40), (10, 40), 16, crop=True), MEAN, STD)
    assert small.shape == (3, 16, 32) and not small[:, 10:].any()


def test_refinement_sees_no_patch_in_the_cut_off_remainder():
    frame = Frame((100, 150), (100, 150), 16, crop=True)
    content = refine.patch_to_content(np.ones(frame.grid_hw, dtype=bool), frame)
    assert content.shape == (100, 150)
    assert content[:96, :144].all() and not content[96:].any() and not content[:, 144:].any()


@pytest.mark.parametrize(("preset", "batch_hw"), [("paper", (96, 144)), ("default", (112, 160))])
def test_the_pipeline_crops_for_dss_paper_and_pads_by_default(monkeypatch, preset, batch_hw):
    batches: list[torch.Tensor] = []

    def extract(backbone: object, batch: torch.Tensor) -> list[object]:
        batches.append(batch)
        return [None] * len(batch)

    monkeypatch.setattr(pipeline.features, "extract", extract)
    backbone = SimpleNamespace(patch_size=16, mean_std=(MEAN, STD), device=torch.device("cpu"))
    runner = Discoverer(backbone, DiscoverySpec(method="dss", preset=preset))  # type: ignore[arg-type]
    pixels = np.random.default_rng(1).integers(0, 256, (100, 150, 3)).astype(np.uint8)
    image = LoadedImage("a.png", pixels, (100, 150), "0")
    frame = runner.frame(image)
    runner._forward([image], [frame])
    assert frame.crop is (preset == "paper") and batches[0].shape == (1, 3, *batch_hw)
    assert torch.allclose(batches[0][0, :, :96, :144], normalised(pixels[:96, :144]), atol=1e-6)
