"""Start-up: what the entry points import, and the named ViTs built without timm.

``import timm`` imports torchvision and, through it, ``torch._dynamo``: seconds of every
process start. The checks run in fresh interpreters and read ``sys.modules``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zerolabel.errors import WeightsError
from zerolabel.vit import features
from zerolabel.vit import model as native
from zerolabel.vit.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[2]
_PYTHONPATH = os.pathsep.join(str(ROOT / part) for part in ("worker", "backend", "."))
ARCH = "vit_small_patch16_224"
DEPTH2 = {"depth": 2}
HEAVY = ("torch", "timm", "torchvision", "sympy")


def _loaded_after(code: str) -> set[str]:
    """The top-level packages of ``HEAVY`` a fresh interpreter holds after running ``code``."""
    names = "{m.split('.')[0] for m in sys.modules}"
    probe = f"{code}\nprint(' '.join(sorted({names} & {set(HEAVY)!r})))"
    done = subprocess.run(
        [sys.executable, "-c", "import sys\n" + probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": _PYTHONPATH},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_command_line_imports_no_torch():
    assert _loaded_after("import zerolabel.cli.main") == set()


def test_the_pipeline_and_the_worker_runtime_import_torch_but_not_timm():
    loaded = _loaded_after("import zerolabel.pipeline, zerolabel.queue.runtime")
    assert loaded == {"torch"}


def test_a_named_backbone_loads_and_runs_from_a_checkpoint_without_timm(dino_checkpoint):
    code = (
        "import torch\n"
        "from zerolabel.vit.backbone import load_backbone\n"
        "from zerolabel.vit.features import extract\n"
        f"b = load_backbone({ARCH!r}, checkpoint={str(dino_checkpoint)!r}, device='cpu',"
        f" model_kwargs={DEPTH2!r})\n"
        "assert extract(b, torch.zeros(1, 3, 64, 96))[0].k.shape == (24, 384)\n"
    )
    assert _loaded_after(code) == {"torch"}


@pytest.mark.parametrize("name", sorted(native.ARCHITECTURES))
def test_each_native_architecture_is_timms_model(name: str):
    """Same parameter names and shapes, same normalisation, identical features."""
    import timm

    kwargs = {"num_classes": 0, "dynamic_img_size": True, **DEPTH2}
    torch.manual_seed(0)
    reference = timm.create_model(name, **kwargs).eval()
    arch = native.architecture(name, kwargs)
    assert arch is not None
    built = native.build(arch, reference.state_dict())
    assert isinstance(built, native.VisionTransformer)
    assert {k: v.shape for k, v in built.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    cfg = reference.pretrained_cfg
    assert built.pretrained_cfg == {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
    patch = arch.patch_size
    images = torch.randn(2, 3, 5 * patch, 7 * patch, generator=torch.Generator().manual_seed(1))
    ours = features.extract(_wrap(built.eval()), images)
    theirs = features.extract(_wrap(reference), images)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.k, b.k) and torch.equal(a.tokens, b.tokens)
        assert torch.equal(a.cls_attention, b.cls_attention)


def _wrap(model: torch.nn.Module):
    from zerolabel.vit.backbone import Backbone

    return Backbone(model, ARCH, "random", torch.device("cpu"), torch.float32, "dino")


def test_the_checkpoints_tensors_become_the_parameters(dino_checkpoint):
    backbone = load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)
    assert isinstance(backbone.model, native.VisionTransformer)
    weights = torch.load(dino_checkpoint, weights_only=True)
    loaded = backbone.model.state_dict()
    assert set(loaded) == set(weights)
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
    assert not any(p.is_meta or p.requires_grad for p in backbone.model.parameters())


def test_a_checkpoint_that_needs_conversion_still_loads_through_timm(dino_checkpoint, tmp_path):
    """Positional embeddings trained on another grid (160 px: 10 x 10) are resized by timm."""
    weights = torch.load(dino_checkpoint, weights_only=True)
    weights["pos_embed"] = torch.randn(1, 1 + 10 * 10, 384, generator=torch.Generator())
    path = tmp_path / "grid10.pth"
    torch.save(weights, path)
    backbone = load_backbone(ARCH, checkpoint=path, device="cpu", model_kwargs=DEPTH2)
    assert not isinstance(backbone.model, native.VisionTransformer)
    assert backbone.model.pos_embed.shape == (1, 197, 384)
    assert torch.isfinite(features.extract(backbone, torch.zeros(1, 3, 64, 64))[0].k).all()


def test_a_misfit_checkpoint_is_refused_with_timms_message(dino_checkpoint):
    with pytest.raises(WeightsError, match=r"missing keys blocks\.2\.") as info:
        load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs={"depth": 3})
    assert "unexpected keys none" in str(info.value)


@pytest.mark.parametrize(
    "overrides",
    [{"qkv_bias": False}, {"depth": 0}, {"depth": True}, {"num_heads": 5}, {"num_classes": 10}],
)
def test_overrides_this_module_does_not_apply_go_to_timm(overrides):
    kwargs = {"num_classes": 0, "dynamic_img_size": True, **overrides}
    assert native.architecture(ARCH, kwargs) is None
    assert native.architecture("vit_large_patch16_224", {}) is None


def test_positions_are_computed_once_per_grid_and_follow_new_weights(dino_checkpoint):
    backbone = load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)
    images = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    first = features.extract(backbone, images)[0].k
    kept = dict(backbone.positions)
    assert len(kept) == 1
    assert torch.equal(features.extract(backbone, images)[0].k, first)
    assert backbone.positions.keys() == kept.keys()  # reused, not recomputed
    shifted = backbone.model.state_dict()
    shifted["pos_embed"] = shifted["pos_embed"] + 0.5
    backbone.model.load_state_dict(shifted)
    fresh = load_backbone(ARCH, checkpoint=dino_checkpoint, device="cpu", model_kwargs=DEPTH2)
    fresh.model.load_state_dict(shifted)
    moved = features.extract(backbone, images)[0].k
    assert torch.equal(moved, features.extract(fresh, images)[0].k)
    assert not torch.equal(moved, first)


@pytest.mark.parametrize("grid_hw", [(7, 9), (20, 30), (14, 14)])
def test_the_timm_rule_equals_timms_own_resampling(grid_hw):
    from timm.layers.pos_embed import resample_abs_pos_embed

    pos = torch.randn(1, 1 + 14 * 14, 8, generator=torch.Generator().manual_seed(3))
    ours = features.timm_resample_pos_embed(pos, grid_hw, (14, 14), 1)
    theirs = resample_abs_pos_embed(pos, new_size=grid_hw, old_size=(14, 14), num_prefix_tokens=1)
    assert torch.equal(ours, theirs)
