"""The training forwards equal the backbone's own, drop path follows DINO's rule, a step's views
pair up as DINO and DoRA weigh them, memory is counted, files are named by their bytes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from zerolabel.adapt import network, saving
from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.crops import CropSettings
from zerolabel.adapt.ddp import Distributed, from_environment
from zerolabel.adapt.dino import DinoHead
from zerolabel.adapt.memory import StepMemory, check, saved_bytes, step_memory
from zerolabel.adapt.views import Shape, plan, student_views
from zerolabel.errors import ConfigError
from zerolabel.vit.backbone import load_backbone
from zerolabel.vit.features import extract


@pytest.fixture(scope="module")
def vit():
    """A depth-2 ViT-S/16 with seeded random weights, its timm-free build."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        backbone = load_backbone(
            "vit_small_patch16_224", model_kwargs={"depth": 2}, device="cpu", random_weights=True
        )
    return backbone


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _head(vit, out_dim=16):
    return DinoHead(vit.num_features, out_dim, hidden_dim=32, bottleneck_dim=8,
                    generator=torch.Generator().manual_seed(0))  # fmt: skip


# --- forwards ---------------------------------------------------------------------------------


def test_tokens_at_the_native_size_are_the_backbones_forward(vit):
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(
            network.tokens(vit.model, images), vit.model.forward_features(images), atol=1e-5
        )


def test_the_teacher_sees_what_feature_extraction_sees_at_any_size(vit):
    images = torch.randn(2, 3, 64, 96)
    out = network.teacher_forward(vit.model, _head(vit), images)
    expected = extract(vit, images)
    assert out.grid_hw == (4, 6) and out.logits.shape == (2, 16)
    for index, features in enumerate(expected):
        assert torch.allclose(out.keys[index], features.k, atol=1e-5)
        assert torch.allclose(out.queries[index], features.q, atol=1e-5)
        assert torch.allclose(out.cls_attention[index], features.cls_attention, atol=1e-5)
        assert torch.allclose(out.tokens[index], features.tokens, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(vit):
    images = torch.randn(2, 3, 32, 32)
    results = []
    for checkpointing in (False, True):
        model = network.StudentNet(
            vit.model, _head(vit), pos_embed="dino", checkpointing=checkpointing
        ).requires_grad_(True)
        model.zero_grad()
        loss = model(images, images[:, :, :16, :16]).square().sum()
        loss.backward()
        results.append((loss.item(), model.backbone.blocks[0].attn.qkv.weight.grad.clone()))
        model.requires_grad_(False)
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


def test_drop_path_follows_dinos_rule():
    scales = network.drop_path_scales(torch.Generator().manual_seed(0), 4000, 4, 0.3)
    assert scales.shape == (4, 4000, 2)
    assert torch.equal(scales[0], torch.ones(4000, 2))  # the first block never drops
    last = scales[-1]
    values = last.unique().tolist()
    assert values[0] == 0.0 and values[1:] == [pytest.approx(1 / 0.7)]
    assert (last == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(network.drop_path_scales(torch.Generator(), 3, 1, 0.5), torch.ones(1, 3, 2))


def test_a_vit_with_register_tokens_is_refused():
    model = SimpleNamespace(reg_token=torch.zeros(1), cls_token=torch.zeros(1))
    with pytest.raises(ConfigError, match="register tokens"):
        network.check_trainable(model)


# --- a step's views ---------------------------------------------------------------------------

CROPS = CropSettings(32, 16, 2, (0.4, 1.0), (0.05, 0.4), (0.2, 1.0), (0.5,) * 3, (0.5,) * 3)


def test_a_steps_pairs_weigh_images_and_clips_as_dino_and_dora_do(vit):
    shape = Shape(CROPS, objects=3, depth=2, drop_path=0.1)
    pixels = [torch.rand(3, 40, 40), torch.rand(4, 3, 40, 40)]  # an image, a 4-frame clip
    step = plan(pixels, [torch.Generator().manual_seed(i) for i in range(2)], shape)
    assert step.teacher_views.shape == (2 + 4, 3, 32, 32)
    teacher = network.teacher_forward(vit.model, _head(vit), step.teacher_views)
    views = student_views(step, teacher, torch.tensor([0, 2, 5]))
    assert views.global_views.shape == (2 + 4 * 3, 3, 32, 32)
    assert views.local_views.shape == (2 + 4 * 2, 3, 16, 16)
    assert views.global_scales.shape == (2, 14, 2) and views.local_scales.shape == (2, 10, 2)
    pairs, weights = views.pairs.tolist(), views.weights
    image_terms, clip_terms = pairs[:6], pairs[6:]
    # DINO: each global view teaches the other and both local views (2 + 2 * 2 terms)
    assert sorted(image_terms) == sorted([[0, 1], [1, 0], [0, 14], [0, 15], [1, 14], [1, 15]])
    assert torch.allclose(weights[:6], torch.full((6,), 1 / 6 / 2))
    # DoRA: frame f teaches its 3 masked views and its 2 local crops, half and half
    assert len(clip_terms) == 4 * (3 + 2)
    frame_1 = [pair[1] for pair in clip_terms if pair[0] == 2 + 1]
    assert frame_1 == [2 + 3, 2 + 4, 2 + 5, 14 + 2 + 2, 14 + 2 + 3]
    assert weights[6:].sum().item() == pytest.approx(0.5)  # each item weighs the same
    masked = views.global_views[2:].reshape(4, 3, 3, 32, 32)
    frames = step.teacher_views[2:]
    for f in range(4):
        for k in range(3):
            kept = masked[f, k] != 0
            assert torch.equal(masked[f, k][kept], frames[f][kept])  # the frame, masked
            assert 0 < kept.float().mean() < 1


# --- memory, files, processes ----------------------------------------------------------------


def test_saved_bytes_counts_what_autograd_keeps_and_not_the_weights():
    weight = torch.nn.Parameter(torch.randn(64, 64))
    x = torch.randn(100, 64)
    kept = saved_bytes(lambda: torch.tanh(x @ weight).sum(), [weight])
    assert kept == 2 * 100 * 64 * 4  # the matmul's input and tanh's output


def test_a_step_that_does_not_fit_is_refused_with_what_to_lower(vit):
    student = network.StudentNet(vit.model, _head(vit), pos_embed="dino", checkpointing=False)
    student.requires_grad_(True)
    need = step_memory(student, global_size=32, local_size=16, views=(4, 8), out_dim=16,
                       device=torch.device("cpu"))  # fmt: skip
    student.requires_grad_(False)
    assert need.per_global_view > need.per_local_view > 0 and need.fixed > 0
    per_view = 4 * need.per_global_view + 8 * need.per_local_view
    assert need.activations == per_view + need.fixed
    # the head's normalised last layer (out_dim x bottleneck) is kept once, not per view
    assert need.fixed >= 16 * 8 * 4
    check(need, need.total * 2, items=2, checkpointing=False)  # fits
    with pytest.raises(ConfigError, match="lower --batch-size.*--grad-checkpointing"):
        check(need, need.total, items=2, checkpointing=False)
    check(StepMemory(1, 1, (1, 1), 1, 1), None, items=1, checkpointing=True)  # unknown: no check


def test_with_checkpointing_a_step_keeps_less_but_recomputes_one_block(vit):
    needs = {}
    for checkpointing in (False, True):
        student = network.StudentNet(
            vit.model, _head(vit), pos_embed="dino", checkpointing=checkpointing
        )
        student.requires_grad_(True)
        needs[checkpointing] = step_memory(student, global_size=32, local_size=16,
                                           views=(4, 8), out_dim=16,
                                           device=torch.device("cpu"))  # fmt: skip
        student.requires_grad_(False)
        assert student.checkpointing is checkpointing  # measured without, then put back
    plain, checkpointed = needs[False], needs[True]
    assert plain.recompute == 0 and checkpointed.recompute > 0
    assert checkpointed.activations < plain.activations
    # twice one block of two, for the larger group of views: what the whole network keeps
    # per view for that group without checkpointing
    largest = max(4 * plain.per_global_view, 8 * plain.per_local_view)
    assert checkpointed.recompute == largest
    assert checkpointed.total < plain.total
    params = sum(p.numel() * 4 for p in student.parameters())
    assert plain.state == checkpointed.state == 4 * params  # grad, 2 moments, a step's sqrt


def test_exported_weights_are_named_by_their_bytes(vit, tmp_path):
    path = saving.export(vit.model, tmp_path, {"steps": 3})
    data = path.read_bytes()
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    assert path.name == f"adapted-{digest[:12]}.pth"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == digest and meta["steps"] == 3
    again = load_backbone(
        "vit_small_patch16_224", checkpoint=path, model_kwargs={"depth": 2}, device="cpu"
    )
    for key, value in vit.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
    assert saving.export(vit.model, tmp_path / "..", {"steps": 3}).name == path.name


def test_the_loss_curve_keeps_at_most_its_points():
    curve = saving.loss_curve([float(i) for i in range(1000)], points=100)
    assert len(curve) == 100 and curve[0] == {"step": 10, "loss": 4.5}
    assert curve[-1]["step"] == 1000
    assert saving.loss_curve([2.0, 4.0]) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 4.0}]


def test_one_process_alone_needs_no_process_group():
    place = from_environment("cpu", env={})
    assert place == Distributed() and place.main and not place.active
    assert place.share(8) == range(0, 8)
    assert Distributed(rank=1, world_size=2).share(8) == range(4, 8)
    tensor = torch.ones(2)
    assert place.sum(tensor) is tensor and place.any(True, torch.device("cpu"))
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        from_environment("cpu", env={"RANK": "0", "LOCAL_RANK": "0"})


def test_a_config_refuses_a_checkpoint_with_random_weights():
    with pytest.raises(ConfigError, match="exclude each other"):
        AdaptConfig(random_weights=True, checkpoint="x.pth")
