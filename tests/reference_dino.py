"""An independent, deliberately plain ViT in the official DINO layout, for checking ours.

Module names match the official DINO checkpoints (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``norm``...), attention is written out explicitly, and positional embeddings are resized with
DINO's ``(grid + 0.1) / base`` scale-factor rule. Weights are seeded random values.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each [B, heads, N, hd]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(x.shape)
        return self.proj(out)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ReferenceDino(nn.Module):
    """ViT in DINO's layout: cls_token, pos_embed, patch_embed.proj, blocks, norm (no head)."""

    def __init__(self, patch: int = 16, dim: int = 384, depth: int = 2, heads: int = 6) -> None:
        super().__init__()
        self.patch = patch
        self.base = 224 // patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.base**2, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def randomize(self, seed: int) -> ReferenceDino:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
            for block in self.blocks:  # keep LayerNorm scales around one
                for norm in (block.norm1, block.norm2):
                    norm.weight.add_(1.0)
            self.norm.weight.add_(1.0)
        return self

    def positions(self, rows: int, cols: int) -> torch.Tensor:
        if (rows, cols) == (self.base, self.base):
            return self.pos_embed
        grid = self.pos_embed[:, 1:].reshape(1, self.base, self.base, -1).permute(0, 3, 1, 2)
        factors = ((rows + 0.1) / self.base, (cols + 0.1) / self.base)
        grid = F.interpolate(grid, scale_factor=factors, mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([self.pos_embed[:, :1], grid], dim=1)

    @torch.no_grad()
    def last_block_keys(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, dim] keys of the last block (heads concatenated), CLS dropped."""
        rows, cols = images.shape[-2] // self.patch, images.shape[-1] // self.patch
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.positions(rows, cols)
        for block in self.blocks[:-1]:
            x = block(x)
        _, k, _ = self.blocks[-1].attn.split(self.blocks[-1].norm1(x))
        return k.transpose(1, 2).flatten(2)[:, 1:]
