"""One forward pass -> everything the discovery methods need (the only module that runs the ViT).

The forward mirrors timm's ``forward_features`` except for the positional embeddings, which
follow DINO's interpolation rule by default so that features equal the official implementation's
at any input size. A forward hook on the last block's ``qkv`` linear captures queries, keys and
values; it is removed before the call returns. The same pass gives the output tokens after the
final norm (the CLS token and the patch tokens), so no method needs a second forward pass.

The interpolated positional embeddings of a grid size are computed once, in fp32, and kept on
the backbone. Whatever the forward pass's precision, the features come back in fp32, cast once
at the end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from zerolabel.vit.backbone import Backbone

POSITIONS_KEPT = 16
"""Grid sizes whose interpolated positional embeddings a backbone keeps (a few MiB at most)."""


@dataclass(frozen=True)
class PatchFeatures:
    """Last-block features of one image; prefix (CLS/register) tokens dropped from q/k/v.

    q, k, v: [N, D] with N = gh * gw patches in row-major order and D = heads * head_dim
    (heads concatenated). cls_output: [E] final-norm CLS token. cls_attention: [heads, N]
    CLS-to-patch attention (softmax over all tokens, patch part). tokens: [N, E] the patch
    tokens the last block outputs, after the final norm (what representer point selection's
    authors read, before their ReLU).
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cls_output: torch.Tensor
    cls_attention: torch.Tensor
    grid_hw: tuple[int, int]
    tokens: torch.Tensor


def dino_interpolate_pos_embed(
    pos_embed: torch.Tensor, grid_hw: tuple[int, int], base_hw: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """DINO's rule: bicubic with ``scale_factor = (g + 0.1) / base`` per axis.

    The +0.1 keeps ``floor(base * scale)`` from landing one short through rounding; because the
    scale (not the size) is given, the sampling grid differs slightly from an exact resize.

    Args:
        pos_embed: [1, num_prefix + bh * bw, C] learned embeddings.
        grid_hw: target patch grid (gh, gw).
        base_hw: the grid the embeddings were trained for (bh, bw).
        num_prefix: leading tokens without a grid position (CLS), passed through unchanged.

    Returns:
        [1, num_prefix + gh * gw, C].
    """
    if tuple(grid_hw) == tuple(base_hw):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    channels = grid.shape[-1]
    grid = grid.float().reshape(1, base_hw[0], base_hw[1], channels).permute(0, 3, 1, 2)
    scale = ((grid_hw[0] + 0.1) / base_hw[0], (grid_hw[1] + 0.1) / base_hw[1])
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
    if tuple(grid.shape[-2:]) != tuple(grid_hw):
        raise AssertionError(f"interpolated grid {tuple(grid.shape[-2:])} != {grid_hw}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def timm_resample_pos_embed(
    pos_embed: torch.Tensor, grid_hw: tuple[int, int], base_hw: tuple[int, int], num_prefix: int
) -> torch.Tensor:
    """timm's rule: an exact bicubic resize to the grid, antialiased (when shrinking).

    Args:
        pos_embed: [1, num_prefix + bh * bw, C] learned embeddings.
        grid_hw: target patch grid (gh, gw).
        base_hw: the grid the embeddings were trained for (bh, bw).
        num_prefix: leading tokens without a grid position, passed through unchanged.

    Returns:
        [1, num_prefix + gh * gw, C].
    """
    if tuple(grid_hw) == tuple(base_hw):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    channels = grid.shape[-1]
    grid = grid.float().reshape(1, base_hw[0], base_hw[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=grid_hw, mode="bicubic", antialias=True)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def positions(backbone: Backbone, grid_hw: tuple[int, int]) -> torch.Tensor:
    """The positional embeddings of a patch grid under the backbone's rule, computed once.

    Kept per grid size (the last :data:`POSITIONS_KEPT`) and per version of the embedding
    parameter, so weights loaded later are never paired with stale positions. Interpolated in
    fp32 outside any autocast.
    """
    model: Any = backbone.model
    param: torch.Tensor = model.pos_embed
    key = (backbone.pos_embed, tuple(grid_hw), param.data_ptr(), param._version)
    kept = backbone.positions.pop(key, None)
    if kept is None:
        n_prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        base_hw = tuple(model.patch_embed.grid_size)
        dino = backbone.pos_embed == "dino"
        resample = dino_interpolate_pos_embed if dino else timm_resample_pos_embed
        with torch.autocast(backbone.device.type, enabled=False):
            kept = resample(param, grid_hw, base_hw, n_prefix)
    backbone.positions[key] = kept  # most recently used last
    while len(backbone.positions) > POSITIONS_KEPT:
        backbone.positions.pop(next(iter(backbone.positions)))
    return kept


def _embed(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding + prefix tokens + positional embeddings: [B, prefix + N, C]."""
    model: Any = backbone.model
    x = model.patch_embed(images)  # [B, gh, gw, C] (dynamic_img_size)
    batch, gh, gw, channels = x.shape
    x = x.reshape(batch, gh * gw, channels)
    prefix_tokens = [
        t.expand(batch, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None
    ]
    pos = positions(backbone, (gh, gw))
    if model.no_embed_class:
        x = torch.cat([*prefix_tokens, x + pos], dim=1)
    else:
        x = torch.cat([*prefix_tokens, x], dim=1) + pos
    out: torch.Tensor = model.pos_drop(x)
    return out


@torch.inference_mode()
def extract(backbone: Backbone, images: torch.Tensor) -> list[PatchFeatures]:
    """Run the ViT once on a batch of same-size images.

    Args:
        backbone: the loaded model.
        images: [B, 3, H, W] normalised, H and W multiples of the patch size.

    Returns:
        One :class:`PatchFeatures` per image, float32.
    """
    model: Any = backbone.model  # timm internals are untyped module attributes
    p = backbone.patch_size
    if images.shape[-2] % p or images.shape[-1] % p:
        raise ValueError(f"input {tuple(images.shape[-2:])} is not a multiple of patch {p}")
    grid_hw = (images.shape[-2] // p, images.shape[-1] // p)
    captured: dict[str, torch.Tensor] = {}
    attn = model.blocks[-1].attn
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: captured.__setitem__("qkv", out))
    images = images.to(backbone.device, backbone.dtype, non_blocking=True)
    try:
        with _autocast(backbone):
            x = _embed(backbone, images)
            x = model.norm(backbone.blocks(model.norm_pre(x)))
    finally:
        handle.remove()
    return _split(captured["qkv"], x, attn, model.num_prefix_tokens, grid_hw)


def _autocast(backbone: Backbone) -> contextlib.AbstractContextManager[object]:
    if backbone.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=backbone.device.type, dtype=backbone.autocast)


def _split(
    qkv: torch.Tensor,
    tokens: torch.Tensor,
    attn: Any,
    prefix: int,
    grid_hw: tuple[int, int],
) -> list[PatchFeatures]:
    batch, n_tokens, _ = qkv.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    q, k, v = qkv.reshape(batch, n_tokens, 3, heads, head_dim).unbind(2)  # [B, T, h, hd]
    q, k = attn.q_norm(q).float(), attn.k_norm(k).float()  # identity for DINO
    v = v.float()
    # CLS-to-all attention per head: softmax(q_cls . k / sqrt(hd)) over every token.
    logits = torch.einsum("bhd,bthd->bht", q[:, 0], k) * attn.scale
    cls_attention = logits.softmax(dim=-1)[:, :, prefix:]  # [B, h, N]
    flat = [t[:, prefix:].reshape(batch, -1, heads * head_dim) for t in (q, k, v)]
    return [
        PatchFeatures(
            q=flat[0][i],
            k=flat[1][i],
            v=flat[2][i],
            cls_output=tokens[i, 0].float(),
            cls_attention=cls_attention[i],
            grid_hw=grid_hw,
            tokens=tokens[i, prefix:].float(),
        )
        for i in range(batch)
    ]
