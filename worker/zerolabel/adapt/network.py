"""The ViT as training runs it: student forward with stochastic depth and optional gradient
checkpointing, teacher forward that also returns what DoRA tracks with.

The backbone is the module :func:`zerolabel.vit.backbone.load_backbone` builds (timm's module
and parameter names, one [CLS] token); its blocks are run here rather than through its own
``forward``, so that views of any size get their positional embeddings by the backbone's rule
(:mod:`zerolabel.vit.features`), with gradients, and so that the drop decisions of stochastic
depth come from the caller (drawn per image from seeded generators, see
:func:`drop_path_scales`) instead of a global generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from zerolabel.adapt.dino import DinoHead
from zerolabel.errors import ConfigError
from zerolabel.vit.features import dino_interpolate_pos_embed, timm_resample_pos_embed


def check_trainable(model: Any) -> None:
    """Refuse backbones this module cannot run: no single [CLS] token, or no timm-style blocks.

    Raises:
        ConfigError: the backbone has register tokens, no class token, or unknown blocks.
    """
    if getattr(model, "reg_token", None) is not None or getattr(model, "cls_token", None) is None:
        raise ConfigError(
            "zerolabel adapt trains ViTs with one [CLS] token and no register tokens: "
            "choose a DINO backbone (dino_vits16, dino_vitb16 ...)"
        )
    if getattr(model, "no_embed_class", False) or int(model.num_prefix_tokens) != 1:
        raise ConfigError("zerolabel adapt needs a ViT whose [CLS] token has a position")
    block = model.blocks[0]
    if not all(hasattr(block, name) for name in ("norm1", "attn", "norm2", "mlp")):
        raise ConfigError(f"blocks of type {type(block).__name__} are not pre-norm ViT blocks")


def embed(model: Any, images: Tensor, pos_embed: str) -> Tensor:
    """Patch embedding, [CLS] and positional embeddings: [B, 1 + N, C]."""
    x = model.patch_embed(images)  # [B, gh, gw, C]
    batch, gh, gw, channels = x.shape
    x = x.reshape(batch, gh * gw, channels)
    base_hw = tuple(model.patch_embed.grid_size)
    resample = dino_interpolate_pos_embed if pos_embed == "dino" else timm_resample_pos_embed
    positions = resample(model.pos_embed, (gh, gw), base_hw, 1)
    x = torch.cat([model.cls_token.expand(batch, -1, -1), x], dim=1) + positions
    out: Tensor = model.norm_pre(model.pos_drop(x))
    return out


def _block(block: Any, x: Tensor, scales: Tensor | None) -> Tensor:
    """A pre-norm block; ``scales`` [B, 2] multiply its two residual branches (drop path)."""
    attention = block.ls1(block.attn(block.norm1(x)))
    if scales is not None:
        attention = attention * scales[:, 0, None, None]
    x = x + attention
    mlp = block.ls2(block.mlp(block.norm2(x)))
    if scales is not None:
        mlp = mlp * scales[:, 1, None, None]
    out: Tensor = x + mlp
    return out


def tokens(
    model: Any,
    images: Tensor,
    *,
    pos_embed: str = "dino",
    scales: Tensor | None = None,
    checkpointing: bool = False,
) -> Tensor:
    """The final-norm tokens [B, 1 + N, C] of same-size images.

    Args:
        model: the ViT.
        images: [B, 3, H, W] normalised, H and W multiples of the patch size.
        pos_embed: "dino" or "timm" interpolation of the positional embeddings.
        scales: [depth, B, 2] drop-path factors of every block's two branches (0 drops a
            branch, ``1 / keep`` keeps it); None: no drop path.
        checkpointing: recompute each block during the backward pass (saves its activations).
    """
    x = embed(model, images, pos_embed)
    for index, block in enumerate(model.blocks):
        scale = None if scales is None else scales[index]
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(_block, block, x, scale, use_reentrant=False)
        else:
            x = _block(block, x, scale)
    out: Tensor = model.norm(x)
    return out


def drop_path_scales(generator: torch.Generator, views: int, depth: int, rate: float) -> Tensor:
    """[depth, views, 2] drop-path factors, DINO's rule: block ``i`` drops each branch with
    probability ``rate * i / (depth - 1)``, and a kept branch is scaled by ``1 / keep``."""
    drop = torch.linspace(0.0, rate, depth)[:, None, None] if depth > 1 else torch.zeros(1, 1, 1)
    keep = 1.0 - drop
    draws = torch.rand(depth, views, 2, generator=generator)
    return torch.floor(keep + draws) / keep


class StudentNet(nn.Module):
    """Backbone and head, one module (what DistributedDataParallel wraps).

    ``forward(global_views, local_views, global_scales, local_scales)`` returns the logits of
    every view, global ones first: [S_global + S_local, out_dim].
    """

    def __init__(
        self, backbone: nn.Module, head: DinoHead, *, pos_embed: str, checkpointing: bool
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pos_embed = pos_embed
        self.checkpointing = checkpointing

    def forward(
        self,
        global_views: Tensor,
        local_views: Tensor,
        global_scales: Tensor | None = None,
        local_scales: Tensor | None = None,
    ) -> Tensor:
        features = []
        for views, scales in ((global_views, global_scales), (local_views, local_scales)):
            if views.shape[0]:
                out = tokens(
                    self.backbone,
                    views,
                    pos_embed=self.pos_embed,
                    scales=scales,
                    checkpointing=self.checkpointing,
                )
                features.append(out[:, 0])
        logits: Tensor = self.head(torch.cat(features))
        return logits


@dataclass(frozen=True)
class TeacherOutput:
    """The teacher's pass over its views.

    logits: [T, out_dim] of the head. tokens: [T, N, C] final-norm patch tokens. queries and
    keys: [T, N, C] the last block's, heads concatenated. cls_attention: [T, H, N] the [CLS]
    row of the last block's attention (softmax over all tokens), patch columns.
    """

    logits: Tensor
    tokens: Tensor
    queries: Tensor
    keys: Tensor
    cls_attention: Tensor
    grid_hw: tuple[int, int]


@torch.no_grad()
def teacher_forward(
    backbone: Any, head: DinoHead, images: Tensor, *, pos_embed: str = "dino"
) -> TeacherOutput:
    """The teacher's logits and its last block's attention on same-size views."""
    attn = backbone.blocks[-1].attn
    captured: dict[str, Tensor] = {}
    hook = attn.qkv.register_forward_hook(lambda _m, _i, out: captured.__setitem__("qkv", out))
    try:
        out = tokens(backbone, images, pos_embed=pos_embed)
    finally:
        hook.remove()
    batch, count, _ = captured["qkv"].shape
    heads = int(attn.num_heads)
    qkv = captured["qkv"].reshape(batch, count, 3, heads, -1).float()
    q, k = attn.q_norm(qkv[:, :, 0]), attn.k_norm(qkv[:, :, 1])  # [B, T, H, hd]
    scale = q.shape[-1] ** -0.5
    attention = torch.einsum("bhd,bthd->bht", q[:, 0] * scale, k).softmax(dim=-1)
    patch = backbone.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, tuple | list) else patch
    grid_hw = (images.shape[-2] // int(patch), images.shape[-1] // int(patch))
    return TeacherOutput(
        logits=head(out[:, 0]).float(),
        tokens=out[:, 1:].float(),
        queries=q[:, 1:].reshape(batch, count - 1, -1),
        keys=k[:, 1:].reshape(batch, count - 1, -1),
        cls_attention=attention[:, :, 1:],
        grid_hw=grid_hw,
    )
