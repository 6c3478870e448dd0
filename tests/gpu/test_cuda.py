"""CUDA paths (run when a GPU is present; skipped otherwise)."""

from __future__ import annotations

import pytest
import torch
from zerolabel.vit import features
from zerolabel.vit.backbone import load_backbone

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_device_is_cuda_and_half_precision_keys_match_fp32(dino_checkpoint):
    kwargs = {"checkpoint": dino_checkpoint, "model_kwargs": {"depth": 2}}
    fp32 = load_backbone("vit_small_patch16_224", device="auto", **kwargs)
    fp16 = load_backbone("vit_small_patch16_224", device="auto", half=True, **kwargs)
    assert fp32.device.type == "cuda"
    images = torch.randn(4, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    for a, b in zip(features.extract(fp32, images), features.extract(fp16, images), strict=True):
        assert b.k.dtype == torch.float32  # features are returned in fp32 either way
        assert float((a.k - b.k).norm() / a.k.norm()) < 2e-2


def test_autocast_pinned_batches_and_a_compiled_trunk_match_fp32(dino_checkpoint):
    kwargs = {"checkpoint": dino_checkpoint, "model_kwargs": {"depth": 2}, "device": "cuda"}
    exact = load_backbone("vit_small_patch16_224", **kwargs)
    images = torch.randn(4, 3, 480, 480, generator=torch.Generator().manual_seed(0))
    reference = features.extract(exact, images)
    for precision in ("fp16", "bf16"):
        fast = load_backbone("vit_small_patch16_224", precision=precision, **kwargs)
        for a, b in zip(reference, features.extract(fast, images.pin_memory()), strict=True):
            assert b.k.dtype == torch.float32
            assert float((a.k - b.k).norm() / a.k.norm()) < 2e-2
    compiled = load_backbone("vit_small_patch16_224", compile_mode="default", **kwargs)
    for a, b in zip(reference, features.extract(compiled, images), strict=True):
        assert float((a.k - b.k).norm() / a.k.norm()) < 1e-3
