"""Reduced precision on the CPU: bf16 where the CPU computes in bf16, fp32 (and one log line)
where it does not; the boxes of a bf16 pass are fp32's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from zerolabel.contract import DiscoverySpec
from zerolabel.io.images import ImageLimits, load_file
from zerolabel.pipeline import Discoverer
from zerolabel.vit import features, precision
from zerolabel.vit.backbone import load_backbone

ARCH = "vit_small_patch16_224"
DEPTH2 = {"depth": 2}
PHOTOS = sorted(Path(__file__).resolve().parents[2].glob("examples/*/*/*.jpg"))


def _load(checkpoint: Path, mode: str = "bf16"):
    return load_backbone(
        ARCH, checkpoint=checkpoint, device="cpu", model_kwargs=DEPTH2, precision=mode
    )


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == precision.__name__]


@pytest.fixture
def cpu(monkeypatch: pytest.MonkeyPatch):
    """Sets the CPU flags the capability check sees (and no oneDNN cap)."""
    for variable in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(variable, raising=False)

    def with_flags(*flags: str) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))

    return with_flags


def test_without_bf16_instructions_bf16_runs_fp32_and_says_so_once(cpu, dino_checkpoint, caplog):
    cpu("avx2", "avx512f", "avx512_vnni")
    caplog.set_level(logging.WARNING)
    fallback = _load(dino_checkpoint)
    assert fallback.autocast is None
    (line,) = _warnings(caplog)
    assert "neither AVX512_BF16 nor AMX-BF16" in line and "running fp32" in line
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    exact = _load(dino_checkpoint, "fp32")
    assert torch.equal(
        features.extract(fallback, images)[0].k, features.extract(exact, images)[0].k
    )
    assert len(_warnings(caplog)) == 1  # fp32 asks nothing


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_with_bf16_instructions_bf16_autocasts_without_a_word(cpu, dino_checkpoint, caplog, flag):
    cpu("avx512f", flag)
    caplog.set_level(logging.WARNING)
    assert _load(dino_checkpoint).autocast is torch.bfloat16
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    ("cap", "kept"),
    [
        ("AVX2", False),
        ("avx512_core", False),
        ("AVX512_CORE_BF16", True),
        ("AVX512_CORE_AMX", True),
    ],
)
def test_a_onednn_isa_cap_below_bf16_counts_as_missing(cpu, monkeypatch, caplog, cap, kept):
    cpu("avx512f", "avx512_bf16", "amx_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    caplog.set_level(logging.WARNING)
    chosen = precision.autocast_dtype(torch.bfloat16, torch.device("cpu"))
    assert (chosen is torch.bfloat16) is kept
    assert [f"ONEDNN_MAX_CPU_ISA={cap.upper()}" in m for m in _warnings(caplog)] == (
        [] if kept else [True]
    )


def test_a_torch_without_onednn_counts_as_missing(cpu, monkeypatch):
    cpu("avx512_bf16")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert precision.cpu_bf16_missing() == "this torch build has no oneDNN CPU kernels"


def test_cuda_and_other_precisions_are_never_checked(monkeypatch):
    def refuse() -> str:
        raise AssertionError("the CPU was checked")

    monkeypatch.setattr(precision, "cpu_bf16_missing", refuse)
    cuda = torch.device("cuda")
    assert precision.autocast_dtype(torch.bfloat16, cuda) is torch.bfloat16
    assert precision.autocast_dtype(torch.float16, cuda) is torch.float16
    assert precision.autocast_dtype(None, torch.device("cpu")) is None


def test_flags_come_from_cpuinfo_where_torch_cannot_list_them(monkeypatch, tmp_path):
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "CPUINFO", info)
    assert precision.cpu_flags() == {"fpu", "sse2", "avx512f", "amx_bf16"}
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "missing")
    assert precision.cpu_flags() == frozenset()


def test_bf16_gives_fp32s_boxes_on_the_example_photos(monkeypatch, dino_checkpoint):
    """A tiny seeded ViT, LOST on every example photo: the bf16 pass boxes what fp32 boxes.

    Forced on where the CPU lacks the instructions (slower there, the same arithmetic).
    """
    monkeypatch.setattr(precision, "cpu_bf16_missing", lambda: None)
    spec = DiscoverySpec(method="lost", backbone=ARCH, weights="random", max_side=320)
    exact = Discoverer(_load(dino_checkpoint, "fp32"), spec)
    fast = Discoverer(_load(dino_checkpoint), spec)
    assert fast.backbone.autocast is torch.bfloat16
    photos = [load_file(path, ImageLimits(), max_side=320) for path in PHOTOS]
    assert len(photos) >= 20
    boxes = [[r.box for r in regions] for regions in exact.run(photos, batch_size=1)]
    assert [[r.box for r in regions] for regions in fast.run(photos, batch_size=1)] == boxes
    whole = [b for b, photo in zip(boxes, photos, strict=True) if _covers(b, photo.original_hw)]
    assert all(boxes) and len(whole) < len(boxes) // 2  # real boxes, not the whole frame


def _covers(boxes: list, hw: tuple[int, int]) -> bool:
    (box,) = boxes
    return (box.x0, box.y0, box.x1, box.y1) == (0, 0, hw[1], hw[0])


def test_bf16_features_reach_the_methods_in_fp32(monkeypatch, dino_checkpoint):
    monkeypatch.setattr(precision, "cpu_bf16_missing", lambda: None)
    fast = _load(dino_checkpoint)
    (feat,) = features.extract(fast, torch.randn(1, 3, 64, 96))
    tensors = (feat.q, feat.k, feat.v, feat.cls_output, feat.cls_attention, feat.tokens)
    assert all(t.dtype == torch.float32 for t in tensors)


def test_bf16_linear_weights_stored_once_give_autocasts_features_exactly(
    monkeypatch, dino_checkpoint
):
    """Stored in bf16 once, the linear weights are what autocast casts them to on every call."""
    monkeypatch.setattr(precision, "cpu_bf16_missing", lambda: None)
    stored = _load(dino_checkpoint)
    linears = [m for m in stored.model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 4 and all(m.weight.dtype == torch.bfloat16 for m in linears)
    others = [p for n, p in stored.model.named_parameters() if "norm" in n or "embed" in n]
    assert others and all(p.dtype == torch.float32 for p in others)
    cast_each_call = _load(dino_checkpoint, "fp32")
    cast_each_call.autocast = torch.bfloat16  # plain autocast over fp32 weights
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    for a, b in zip(
        features.extract(stored, images), features.extract(cast_each_call, images), strict=True
    ):
        assert torch.equal(a.k, b.k) and torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.cls_attention, b.cls_attention)
