"""DINO's schedules, head, loss, centre, EMA and clipping, on small tensors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from zerolabel.adapt import schedules
from zerolabel.adapt.config import AdaptConfig
from zerolabel.adapt.dino import (
    DinoHead,
    batch_center,
    cancel_last_layer,
    clip_gradients,
    distillation_loss,
    ema_update,
    next_center,
    param_groups,
    teacher_probabilities,
)
from zerolabel.errors import ConfigError

# --- schedules ------------------------------------------------------------------------------


def _reference_cosine(base, final, total, warmup, start=0.0):
    """DINO's cosine_scheduler, written from its definition with numpy."""
    ramp = np.linspace(start, base, warmup) if warmup else np.array([])
    rest = np.arange(total - warmup)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * rest / len(rest)))
    return np.concatenate((ramp, cosine))


@pytest.mark.parametrize("total, warmup", [(50, 5), (10, 0), (7, 1), (3, 3)])
def test_cosine_is_dinos_schedule_at_every_step(total, warmup):
    expected = _reference_cosine(2.0, 0.5, total, warmup)
    got = [schedules.cosine(s, total, 2.0, 0.5, warmup=warmup) for s in range(total)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_the_learning_rate_warms_up_to_the_scaled_peak_then_falls_to_min_lr():
    config = AdaptConfig(steps=100, batch_size=64, lr=0.0005, min_lr=1e-6)
    rates = [schedules.learning_rate(config, s) for s in range(100)]
    assert rates[0] == 0.0
    assert rates[9] == pytest.approx(0.0005 * 64 / 256)  # 10 % warm-up, linear scaling
    assert 1e-6 < rates[-1] < 1.1e-6  # DINO's cosine ends one step short of min_lr
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))


def test_weight_decay_grows_and_momentum_reaches_one():
    config = AdaptConfig(steps=40)
    decay = [schedules.weight_decay(config, s) for s in range(40)]
    momentum = [schedules.teacher_momentum(config, s) for s in range(40)]
    assert decay[0] == pytest.approx(0.04) and decay[-1] == pytest.approx(0.4, rel=1e-2)
    assert momentum[0] == pytest.approx(0.996) and momentum[-1] == pytest.approx(1.0, abs=1e-5)
    assert decay == sorted(decay) and momentum == sorted(momentum)


def test_the_teacher_temperature_warms_up_over_thirty_percent_of_the_steps():
    config = AdaptConfig(steps=100)
    temps = [schedules.teacher_temperature(config, s) for s in range(100)]
    assert temps[0] == pytest.approx(0.04)
    assert temps[29] == pytest.approx(0.07) and set(temps[29:]) == {0.07}
    assert temps[:30] == sorted(temps[:30])


def test_the_last_layer_is_frozen_for_the_first_percent_only():
    config = AdaptConfig(steps=300)
    frozen = [s for s in range(300) if schedules.last_layer_frozen(config, s)]
    assert frozen == [0, 1, 2]
    assert not schedules.last_layer_frozen(AdaptConfig(freeze_last_layer_fraction=0.0), 0)


def test_a_config_survives_its_dict_and_names_what_changed():
    config = AdaptConfig(steps=10, model_kwargs={"depth": 2}, global_scale=(0.5, 1.0))
    again = AdaptConfig.from_dict(config.to_dict())
    assert again == config
    other = AdaptConfig.from_dict({**config.to_dict(), "lr": 0.001, "device": "cuda"})
    assert config.changes(other) == ["lr (0.0005 -> 0.001)"]  # the device may change


@pytest.mark.parametrize(
    "field, value",
    [("steps", 0), ("drop_path", 1.0), ("local_scale", (0.5, 0.2)), ("precision", "fp8")],
)
def test_a_config_refuses_values_no_run_could_use(field, value):
    with pytest.raises(ConfigError, match=field if field != "precision" else "precision"):
        AdaptConfig(**{field: value})


# --- head -----------------------------------------------------------------------------------


def test_the_head_maps_features_to_out_dim_with_unit_norm_prototypes():
    head = DinoHead(
        16, 32, hidden_dim=24, bottleneck_dim=8, generator=torch.Generator().manual_seed(0)
    )
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 32)
    # the bottleneck is normalised and every prototype has norm 1: logits are cosines
    assert out.abs().max() <= 1.0 + 1e-5
    assert "last_layer.weight_g" not in dict(head.named_parameters())


def test_the_heads_weights_come_from_the_generator_only():
    def build(seed: int) -> DinoHead:
        return DinoHead(
            8, 16, hidden_dim=12, bottleneck_dim=4, generator=torch.Generator().manual_seed(seed)
        )

    state = torch.random.get_rng_state()
    one, two, other = build(1), build(1), build(2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator untouched
    for (name, a), b, c in zip(
        one.state_dict().items(),
        two.state_dict().values(),
        other.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(a, b), name
        if name.endswith("weight") or name.endswith("weight_v"):
            assert not torch.equal(a, c), name


def test_an_unnormalised_last_layer_learns_its_norms():
    head = DinoHead(8, 16, hidden_dim=12, bottleneck_dim=4, norm_last_layer=False)
    assert "last_layer.weight_g" in dict(head.named_parameters())
    head(torch.randn(3, 8)).sum().backward()
    cancel_last_layer(head)
    assert head.last_layer.weight_v.grad is None and head.last_layer.weight_g.grad is None
    assert head.mlp[0].weight.grad is not None


# --- loss -----------------------------------------------------------------------------------


def _dino_loss_reference(student_out, teacher_out, center, ncrops, student_temp, teacher_temp):
    """DINO's DINOLoss.forward for one batch, written from its definition."""
    student = (student_out / student_temp).chunk(ncrops)
    teacher = F.softmax((teacher_out - center) / teacher_temp, dim=-1).chunk(2)
    total, terms = 0.0, 0
    for iq, q in enumerate(teacher):
        for v in range(ncrops):
            if v == iq:
                continue
            total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
            terms += 1
    return total / terms


def test_the_pair_loss_is_dinos_loss_for_two_global_and_local_crops():
    batch, dim, local = 3, 10, 4
    ncrops = 2 + local
    torch.manual_seed(0)
    student = torch.randn(ncrops * batch, dim)  # DINO's layout: crop-major
    teacher = torch.randn(2 * batch, dim)
    center = torch.randn(1, dim) * 0.1
    expected = _dino_loss_reference(student, teacher, center, ncrops, 0.1, 0.04)
    pairs, weights = [], []
    terms = 2 * ncrops - 2
    for image in range(batch):
        for t in range(2):
            for v in range(ncrops):
                if v != t:
                    pairs.append((t * batch + image, v * batch + image))
                    weights.append(1.0 / terms / batch)
    got = distillation_loss(
        student,
        teacher_probabilities(teacher, center, 0.04),
        torch.tensor(pairs),
        torch.tensor(weights),
        student_temp=0.1,
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_loss_of_a_one_hot_teacher_is_the_students_negative_log_likelihood():
    student = torch.tensor([[2.0, 0.0, -1.0]])
    target = torch.tensor([[0.0, 1.0, 0.0]])
    loss = distillation_loss(
        student, target, torch.tensor([[0, 0]]), torch.ones(1), student_temp=1.0
    )
    assert loss.item() == pytest.approx(-F.log_softmax(student, dim=-1)[0, 1].item())


def test_a_uniform_student_costs_log_of_the_prototypes():
    probs = teacher_probabilities(torch.randn(2, 7), torch.zeros(1, 7), 0.04)
    loss = distillation_loss(
        torch.zeros(2, 7), probs, torch.tensor([[0, 1], [1, 0]]), torch.full((2,), 0.5)
    )
    assert loss.item() == pytest.approx(math.log(7))


def test_the_teacher_is_centred_and_sharpened():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    center = torch.tensor([[0.0, 0.0, 3.0]])
    probs = teacher_probabilities(logits, center, 0.5)
    assert torch.allclose(probs, F.softmax(torch.tensor([[2.0, 4.0, 0.0]]), dim=-1))


def test_the_centre_moves_towards_the_mean_of_all_teacher_outputs():
    outputs = torch.tensor([[1.0, 3.0], [3.0, 5.0]])
    total, count = batch_center(outputs)
    assert torch.equal(total, torch.tensor([[4.0, 8.0]])) and count.item() == 2
    center = next_center(torch.zeros(1, 2), total, count, 0.9)
    assert torch.allclose(center, torch.tensor([[0.2, 0.4]]))


# --- EMA, clipping, parameter groups --------------------------------------------------------


def test_the_teacher_follows_the_student_by_the_momentum():
    teacher, student = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for old, new, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * s)


def test_each_gradient_is_clipped_on_its_own():
    big, small = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))
    big.grad = torch.full((4,), 3.0)  # norm 6
    small.grad = torch.tensor([0.3, 0.4])  # norm 0.5
    clip_gradients([big, small], 3.0)
    assert big.grad.norm().item() == pytest.approx(3.0, rel=1e-5)
    assert torch.equal(small.grad, torch.tensor([0.3, 0.4]))


def test_biases_and_norms_are_not_decayed():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decayed, plain = param_groups(module)
    assert [p.shape for p in decayed["params"]] == [torch.Size([4, 3])]
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
