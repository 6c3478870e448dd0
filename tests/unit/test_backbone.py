"""Weights loading, DINO positional-embedding rule and feature extraction (tiny random ViTs)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from zerolabel.errors import ConfigError, WeightsError
from zerolabel.vit import features
from zerolabel.vit.backbone import load_backbone, set_fused_attention, unwrap_state_dict

from tests.reference_dino import ReferenceDino

ARCH = "vit_small_patch16_224"
DEPTH2 = {"depth": 2}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _bicubic_by_scale(grid: np.ndarray, out_hw: tuple[int, int], scale_hw: tuple[float, float]):
    """Bicubic resampling written out in numpy: a = -0.75, borders clamped, and source
    coordinates (dst + 0.5) / scale - 0.5 -- the semantics of giving a scale factor."""

    def weights(t: np.ndarray) -> np.ndarray:
        a = -0.75
        d = np.stack([1 + t, t, 1 - t, 2 - t], axis=-1)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, far)

    def axis(out_n: int, in_n: int, scale: float) -> np.ndarray:
        src = (np.arange(out_n) + 0.5) / scale - 0.5
        base = np.floor(src).astype(int)
        matrix = np.zeros((out_n, in_n))
        for offset, w in zip(range(-1, 3), weights(src - base).T, strict=True):
            np.add.at(matrix, (np.arange(out_n), np.clip(base + offset, 0, in_n - 1)), w)
        return matrix

    rows = axis(out_hw[0], grid.shape[0], scale_hw[0])
    cols = axis(out_hw[1], grid.shape[1], scale_hw[1])
    return np.einsum("ri,ijc,sj->rsc", rows, grid, cols)


@pytest.mark.parametrize("grid_hw", [(20, 30), (9, 14), (33, 17)])
def test_dino_pos_embed_rule_matches_an_independent_bicubic(grid_hw):
    base = 14
    pos = torch.randn(1, 1 + base * base, 8, generator=torch.Generator().manual_seed(1))
    ours = features.dino_interpolate_pos_embed(pos, grid_hw, (base, base), num_prefix=1)
    scale = ((grid_hw[0] + 0.1) / base, (grid_hw[1] + 0.1) / base)
    grid = pos[0, 1:].reshape(base, base, 8).double().numpy()
    expected = _bicubic_by_scale(grid, grid_hw, scale).reshape(-1, 8)
    assert torch.equal(ours[0, 0], pos[0, 0])  # CLS position passes through
    np.testing.assert_allclose(ours[0, 1:].double().numpy(), expected, rtol=1e-5, atol=1e-5)
    # An exact resize (timm's rule) samples elsewhere: the +0.1 scale matters.
    exact = _bicubic_by_scale(grid, grid_hw, (grid_hw[0] / base, grid_hw[1] / base))
    assert not np.allclose(exact.reshape(-1, 8), expected, atol=1e-4)


def test_official_dino_checkpoint_loads_and_keys_match_reference(dino_checkpoint: Path):
    backbone = load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)
    reference = ReferenceDino(depth=2)
    reference.load_state_dict(torch.load(dino_checkpoint, weights_only=True))
    images = torch.randn(2, 3, 320, 480, generator=torch.Generator().manual_seed(2))
    ours = torch.stack([f.k for f in features.extract(backbone, images)])
    assert _relative_error(ours, reference.last_block_keys(images)) < 1e-4
    assert backbone.weights_id.startswith("file:")


def test_dora_teacher_wrapper_loads(dino_checkpoint: Path, tmp_path: Path):
    weights = torch.load(dino_checkpoint, weights_only=True)
    wrapped = {
        "teacher": {f"module.backbone.{k}": v for k, v in weights.items()}
        | {"module.head.mlp.0.weight": torch.zeros(4, 4)},
        "student": {},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_small"),
    }
    path = tmp_path / "dora.pth"
    torch.save(wrapped, path)
    backbone = load_backbone(ARCH, checkpoint=path, device="cpu", model_kwargs=DEPTH2)
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_safetensors_checkpoint_loads(dino_checkpoint: Path, tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(torch.load(dino_checkpoint, weights_only=True), str(path))
    assert load_backbone(ARCH, checkpoint=path, device="cpu", model_kwargs=DEPTH2)


def test_checkpoint_of_another_depth_names_missing_keys(dino_checkpoint: Path):
    with pytest.raises(WeightsError, match=r"missing keys blocks\.2\.") as info:
        load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs={"depth": 3})
    assert "unexpected keys none" in str(info.value)


def test_checkpoint_with_extra_and_misshapen_keys_is_refused(dino_checkpoint: Path, tmp_path):
    weights = torch.load(dino_checkpoint, weights_only=True)
    extra = tmp_path / "extra.pth"
    torch.save(weights | {"decoder.weight": torch.zeros(2)}, extra)
    with pytest.raises(WeightsError, match=r"unexpected keys decoder\.weight"):
        load_backbone(ARCH, checkpoint=extra, device="cpu", model_kwargs=DEPTH2)
    with pytest.raises(WeightsError, match="size mismatch"):  # ViT-S weights into a ViT-B
        load_backbone(
            "vit_base_patch16_224", checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2
        )


def test_unreadable_checkpoint_says_so(tmp_path: Path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_backbone(ARCH, checkpoint=bad, device="cpu", model_kwargs=DEPTH2)
    with pytest.raises(WeightsError, match="does not exist"):
        load_backbone(ARCH, checkpoint=tmp_path / "nope.pth", device="cpu")


def test_the_vit_and_the_detector_read_checkpoints_through_one_reader(tmp_path: Path):
    from zerolabel.cad.model import read_checkpoint

    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(WeightsError, match=r"checkpoint .*tensor\.pt holds a Tensor, not a state"):
        load_backbone(ARCH, checkpoint=tensor, device="cpu", model_kwargs=DEPTH2)
    with pytest.raises(WeightsError, match=r"CAD checkpoint .*tensor\.pt holds a Tensor"):
        read_checkpoint(tensor)


def test_no_weights_offline_fails_at_once_with_instructions():
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="--checkpoint PATH or ZEROLABEL_CHECKPOINT"):
        load_backbone("dino_vits16", device="cpu", offline=True, model_kwargs=DEPTH2)
    assert time.perf_counter() - start < 5  # no network retries


def test_cached_hub_weights_load_offline_and_no_process_setting_changes(tmp_path, monkeypatch):
    import os

    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    reference = timm.create_model(ARCH, num_classes=0, **DEPTH2).state_dict()
    repo = tmp_path / "models--timm--vit_small_patch16_224.dino"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(reference, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    settings = (constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
    during: list[tuple[object, object]] = []
    create = timm.create_model

    def spy(*args, **kwargs):
        during.append((constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")))
        return create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    backbone = load_backbone("dino_vits16", device="cpu", offline=True, model_kwargs=DEPTH2)
    assert during and all(seen == settings for seen in during)
    assert backbone.weights_id == "hub:vit_small_patch16_224.dino"
    loaded = backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_unknown_backbone_and_bad_options():
    with pytest.raises(ConfigError, match="unknown backbone"):
        load_backbone("not_a_model", device="cpu", random_weights=True)
    with pytest.raises(ConfigError, match="not a timm ViT"):
        load_backbone("resnet18", device="cpu", random_weights=True)
    with pytest.raises(ConfigError, match="half precision needs a CUDA device"):
        load_backbone(ARCH, device="cpu", half=True, random_weights=True)


def test_unwrap_strips_prefixes_and_drops_head():
    state = {"state_dict": {"module.blocks.0.x": torch.ones(1), "head.w": torch.ones(1)}}
    assert list(unwrap_state_dict(state)) == ["blocks.0.x"]


@pytest.fixture(scope="module")
def tiny(dino_checkpoint):
    return load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)


def test_extract_leaves_no_hook_even_when_forward_fails(tiny):
    qkv = tiny.model.blocks[-1].attn.qkv
    features.extract(tiny, torch.zeros(1, 3, 64, 96))
    assert not qkv._forward_hooks
    with pytest.raises(RuntimeError):
        features.extract(tiny, torch.zeros(1, 4, 64, 96))  # 4 channels: patch_embed fails
    assert not qkv._forward_hooks


def test_batched_extraction_equals_one_by_one(tiny):
    images = torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    batched = features.extract(tiny, images)
    for i, feat in enumerate(batched):
        single = features.extract(tiny, images[i : i + 1])[0]
        assert _relative_error(feat.k, single.k) < 1e-5
        assert feat.grid_hw == (6, 8) and feat.k.shape == (48, 384)
        assert feat.cls_attention.shape == (6, 48)
        assert torch.all(feat.cls_attention.sum(-1) <= 1 + 1e-6)


def test_fused_and_explicit_attention_give_the_same_keys(tiny):
    images = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(4))
    fused = features.extract(tiny, images)[0]
    set_fused_attention(tiny.model, False)
    try:
        explicit = features.extract(tiny, images)[0]
    finally:
        set_fused_attention(tiny.model, True)
    assert _relative_error(fused.k, explicit.k) < 1e-5
    assert _relative_error(fused.cls_output, explicit.cls_output) < 1e-5


def test_timm_rule_differs_from_dino_rule_off_224_only(dino_checkpoint):
    timm_rule = load_backbone(
        ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2, pos_embed="timm"
    )
    dino_rule = load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)
    at_224 = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    other = torch.randn(1, 3, 320, 480, generator=torch.Generator().manual_seed(5))
    same = [features.extract(b, at_224)[0].k for b in (timm_rule, dino_rule)]
    assert torch.equal(same[0], same[1])
    differ = [features.extract(b, other)[0].k for b in (timm_rule, dino_rule)]
    assert _relative_error(differ[0], differ[1]) > 1e-4
    assert math.isfinite(float(differ[0].sum()))


def test_bf16_autocast_keeps_fp32_weights_and_returns_close_fp32_features(monkeypatch):
    from zerolabel.vit import precision

    monkeypatch.setattr(precision, "cpu_bf16_missing", lambda: None)  # any CPU: see test_precision
    torch.manual_seed(0)
    exact = load_backbone(ARCH, device="cpu", random_weights=True, model_kwargs={"depth": 2})
    fast = load_backbone(
        ARCH, device="cpu", random_weights=True, model_kwargs={"depth": 2}, precision="bf16"
    )
    fast.model.load_state_dict(exact.model.state_dict())
    assert fast.autocast is torch.bfloat16 and fast.dtype is torch.float32
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    for a, b in zip(features.extract(exact, images), features.extract(fast, images), strict=True):
        assert b.k.dtype == torch.float32 and b.cls_attention.dtype == torch.float32
        assert 0 < float((a.k - b.k).norm() / a.k.norm()) < 2e-2  # bf16 rounding, not garbage
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        load_backbone(ARCH, device="cpu", random_weights=True, precision="fp16")
    with pytest.raises(ConfigError, match="precision must be one of fp32, fp16, bf16"):
        load_backbone(ARCH, device="cpu", random_weights=True, precision="int8")
