"""DINO's pieces (Caron et al., 2021), as its reference implementation computes them.

* :class:`DinoHead`: a 3-layer MLP (GELU) to a 256-d bottleneck, L2-normalised, then a
  weight-normalised linear layer to ``out_dim`` prototypes, whose norms stay at 1 with
  ``norm_last_layer`` (DINO's default).
* :func:`distillation_loss`: the cross-entropy between the teacher's centred, sharpened
  softmax and the student's softmax, over explicit (teacher view, student view, weight)
  pairs, so DINO's multi-crop and DoRA's masked views go through one function.
* :func:`batch_center` and :func:`next_center`: the centre's EMA over every teacher output of
  the step, on all processes.
* :func:`ema_update`, :func:`clip_gradients`, :func:`cancel_last_layer`, :func:`param_groups`:
  the teacher update, DINO's per-parameter gradient clipping, the frozen last layer of the
  first steps, and weight decay for weights only (not biases or norms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _WeightNormLinear(nn.Module):
    """``x @ (g v / |v|)^T`` without bias; ``g`` is a buffer of ones when frozen."""

    def __init__(
        self, in_dim: int, out_dim: int, *, frozen_norm: bool, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        # torch's default initialisation of a linear layer, which DINO's last layer keeps
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5), generator=generator)
        ones = torch.ones(out_dim, 1)
        if frozen_norm:
            self.register_buffer("weight_g", ones)
        else:
            self.weight_g = nn.Parameter(ones)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        out: Tensor = x @ weight.t()
        return out


class DinoHead(nn.Module):
    """The projection head: ``[B, in_dim]`` CLS features -> ``[B, out_dim]`` logits.

    Args:
        in_dim: the backbone's feature size.
        out_dim: prototypes (DINO: 65536).
        hidden_dim: width of the MLP (2048).
        bottleneck_dim: the normalised bottleneck (256).
        norm_last_layer: freeze the last layer's norms at 1 (DINO's default).
        generator: draws the initial weights (truncated normal, std 0.02; zero biases).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        norm_last_layer: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the layers' own init is replaced below
            self.mlp = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, hidden_dim),
                nn.GELU(),
                nn.Linear(hidden_dim, bottleneck_dim),
            )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0, generator=generator)
                nn.init.zeros_(layer.bias)
        self.last_layer = _WeightNormLinear(
            bottleneck_dim, out_dim, frozen_norm=norm_last_layer, generator=generator
        )

    def forward(self, features: Tensor) -> Tensor:
        x = F.normalize(self.mlp(features), dim=-1, p=2)
        out: Tensor = self.last_layer(x)
        return out


def teacher_probabilities(logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """The teacher's targets: ``softmax((logits - center) / temperature)``, [T, D] float32."""
    return F.softmax((logits.float() - center) / temperature, dim=-1)


def distillation_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    pairs: Tensor,
    weights: Tensor,
    *,
    student_temp: float = 0.1,
) -> Tensor:
    """Weighted sum over pairs of ``-sum_d p_t[d] log softmax(s / student_temp)[d]``.

    Args:
        student_logits: [S, D] the head's outputs on the student's views.
        teacher_probs: [T, D] :func:`teacher_probabilities` of the teacher's views.
        pairs: [P, 2] long: (teacher view, student view) of each term.
        weights: [P] each term's weight (DINO: 1 / terms per image, for a mean over images
            divide by the images as well).

    Returns:
        The scalar loss.
    """
    log_probs = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    terms = -(teacher_probs[pairs[:, 0]] * log_probs[pairs[:, 1]]).sum(dim=-1)
    return (terms * weights).sum()


def batch_center(teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """The sum of the teacher's logits and their count: [1, D] and a scalar (summed over
    processes by the caller before :func:`next_center`)."""
    total = teacher_logits.detach().float().sum(dim=0, keepdim=True)
    count = torch.tensor(float(teacher_logits.shape[0]), device=teacher_logits.device)
    return total, count


def next_center(center: Tensor, total: Tensor, count: Tensor, momentum: float) -> Tensor:
    """``center m + mean (1 - m)``, the mean of the step's teacher logits."""
    return center * momentum + (total / count) * (1.0 - momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher = m teacher + (1 - m) student``, parameter by parameter (same order)."""
    for teacher_param, student_param in zip(
        teacher.parameters(), student.parameters(), strict=True
    ):
        teacher_param.mul_(momentum).add_(student_param.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """DINO's clipping: each parameter's gradient scaled to a norm of at most ``max_norm``
    (the factor ``max_norm / (norm + 1e-6)``), independently of the others."""
    for param in parameters:
        if param.grad is None:
            continue
        scale = max_norm / (param.grad.norm(2) + 1e-6)
        if scale < 1:
            param.grad.mul_(scale)


def cancel_last_layer(head: nn.Module) -> None:
    """Drop the gradients of the head's last layer: the optimizer leaves it as it is."""
    for param in head.last_layer.parameters():  # type: ignore[union-attr]
        param.grad = None


def param_groups(module: nn.Module) -> list[dict[str, object]]:
    """Two optimizer groups: weights (decayed), then biases and 1-d parameters (not)."""
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (plain if name.endswith(".bias") or param.ndim <= 1 else decayed).append(param)
    return [{"params": decayed}, {"params": plain, "weight_decay": 0.0}]
