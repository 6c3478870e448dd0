"""The known DINO Vision Transformers, built without importing timm.

``import timm`` imports torchvision, and torchvision imports ``torch._dynamo``: about two
seconds of every process start-up, more than loading the weights and running the first image
together. The backbones of :data:`ARCHITECTURES` are plain pre-norm ViTs, so this module builds
them itself, with timm's module names, parameter names and forward pass (the same state dict
loads into either, and their features are equal), on the ``meta`` device: no throwaway random
initialisation, the checkpoint's tensors become the parameters. Any other timm name, or an
architecture override this module does not know, is built by timm as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass(frozen=True)
class Architecture:
    """What defines one of the ViTs: sizes, layer scale, and the input normalisation of its
    pretrained tag (timm's ``pretrained_cfg`` mean and std)."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int = 224
    mlp_ratio: float = 4.0
    init_values: float | None = None  # layer scale (DINOv2)
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_MEAN_STD


_VITS16 = Architecture(16, 384, 12, 6)
_VITS8 = Architecture(8, 384, 12, 6)
_VITB16 = Architecture(16, 768, 12, 12)
_VITB8 = Architecture(8, 768, 12, 12)
_DINOV2_S14 = Architecture(14, 384, 12, 6, img_size=518, init_values=1e-5)

ARCHITECTURES: dict[str, Architecture] = {
    "vit_small_patch16_224.dino": _VITS16,
    "vit_small_patch8_224.dino": _VITS8,
    "vit_base_patch16_224.dino": _VITB16,
    "vit_base_patch8_224.dino": _VITB8,
    "vit_small_patch14_dinov2.lvd142m": _DINOV2_S14,
    "vit_small_patch14_dinov2": _DINOV2_S14,  # its default tag is lvd142m
    "vit_small_patch8_224": _VITS8,  # default tag: dino
    # The untagged name takes timm's default tag (augreg), normalised with 0.5 / 0.5: DoRA
    # checkpoints and tests load under it.
    "vit_small_patch16_224": replace(_VITS16, mean_std=HALF_MEAN_STD),
}
"""timm names this module builds; a test keeps each equal to timm's own model."""

_OVERRIDES = {"depth", "embed_dim", "num_heads", "mlp_ratio", "img_size", "patch_size"}
"""Architecture overrides (``ZEROLABEL_BACKBONE_KWARGS``) this module applies itself."""

_ALWAYS = {"num_classes": 0, "dynamic_img_size": True}
"""What :func:`zerolabel.vit.backbone.load_backbone` always asks of timm."""


def architecture(name: str, overrides: Mapping[str, Any]) -> Architecture | None:
    """The architecture of a timm name with its overrides; None when timm must build it.

    Args:
        name: timm name (``architecture.tag`` or untagged).
        overrides: the keyword arguments the model would get from timm.create_model.
    """
    known = ARCHITECTURES.get(name)
    if known is None:
        return None
    sizes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _ALWAYS and value == _ALWAYS[key]:
            continue
        if key not in _OVERRIDES or isinstance(value, bool):
            return None
        if key == "mlp_ratio":
            if not isinstance(value, int | float) or value <= 0:
                return None
        elif not isinstance(value, int) or value <= 0:
            return None
        sizes[key] = value
    built = replace(known, **sizes)
    if built.embed_dim % built.num_heads:
        return None  # timm refuses it with its own message
    return built


class PatchEmbed(nn.Module):
    """Non-overlapping patches through one convolution: [B, 3, H, W] -> [B, gh, gw, C]."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.patch_size = (arch.patch_size, arch.patch_size)
        self.img_size = (arch.img_size, arch.img_size)
        self.grid_size = (arch.img_size // arch.patch_size, arch.img_size // arch.patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(3, arch.embed_dim, arch.patch_size, stride=arch.patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.proj(images).permute(0, 2, 3, 1)
        return out


class Attention(nn.Module):
    """Multi-head self-attention; ``qkv`` is one linear whose output is ``[q | k | v]``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.Identity()
        self.k_norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, hd]
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = weights @ v
        out: torch.Tensor = self.proj(x.transpose(1, 2).reshape(batch, tokens, channels))
        return out


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (DINOv2)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        dim = arch.embed_dim
        scaled = arch.init_values is not None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, arch.num_heads)
        self.ls1: nn.Module = LayerScale(dim, arch.init_values or 0.0) if scaled else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * arch.mlp_ratio))
        self.ls2: nn.Module = LayerScale(dim, arch.init_values or 0.0) if scaled else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        out: torch.Tensor = x + self.ls2(self.mlp(self.norm2(x)))
        return out


class VisionTransformer(nn.Module):
    """A DINO ViT with timm's attribute and parameter names and no classifier head.

    The attributes :mod:`zerolabel.vit.features` reads (``patch_embed``, ``cls_token``,
    ``reg_token``, ``pos_embed``, ``no_embed_class``, ``num_prefix_tokens``, ``pos_drop``,
    ``norm_pre``, ``blocks``, ``norm``, ``pretrained_cfg``) mean what they mean in timm.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.embed_dim = self.num_features = arch.embed_dim
        self.patch_embed = PatchEmbed(arch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim))
        self.reg_token: nn.Parameter | None = None
        self.no_embed_class = False
        self.num_prefix_tokens = 1
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.patch_embed.num_patches + 1, arch.embed_dim)
        )
        self.pos_drop = nn.Identity()
        self.norm_pre = nn.Identity()
        self.blocks = nn.Sequential(*[Block(arch) for _ in range(arch.depth)])
        self.norm = nn.LayerNorm(arch.embed_dim, eps=1e-6)
        mean, std = arch.mean_std
        self.pretrained_cfg: dict[str, Any] = {"mean": mean, "std": std}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Final-norm tokens [B, 1 + N, C] of images at the native size (``img_size``)."""
        x = self.patch_embed(images)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        if x.shape[1] != self.patch_embed.num_patches:
            raise ValueError(
                f"forward_features takes {self.arch.img_size} px images; other sizes go "
                "through zerolabel.vit.features.extract"
            )
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        out: torch.Tensor = self.norm(self.blocks(x))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


def build(arch: Architecture, state: Mapping[str, torch.Tensor]) -> VisionTransformer | None:
    """The ViT of ``arch`` whose parameters are the tensors of ``state``, or None when the keys
    or shapes do not fit exactly (then timm's conversions and messages apply).

    The model is created on the ``meta`` device, so no parameter is ever initialised and then
    overwritten; the state's tensors become the parameters (cast later, with the device move).
    """
    with torch.device("meta"):
        model = VisionTransformer(arch)
    expected = {name: param.shape for name, param in model.named_parameters()}
    state = {key: value for key, value in state.items() if key != "mask_token"}  # DINOv2 files
    if set(state) != set(expected):
        return None
    if any(tuple(state[key].shape) != tuple(shape) for key, shape in expected.items()):
        return None
    if any(not value.is_floating_point() for value in state.values()):
        return None
    model.load_state_dict(state, assign=True)
    return model
