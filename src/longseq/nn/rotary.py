"""Rotary position embedding (RoPE; Su et al. 2021, "RoFormer", eq. 34).

Pairs of channels (i, i + d/2) of every query/key head are rotated by the angle
``pos * base^(-2i/d)`` (the "half-split" layout of GPT-NeoX). Because rotations compose,
``<R_m q, R_n k> = <q, R_{n-m} k>``: the score depends on positions only through ``n - m``.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # [Dh/2], float64

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of the rotation angles, ``[L, Dh/2]`` each (float64 until cast)."""
        ang = positions.to(torch.float64)[:, None] * self.inv_freq.to(positions.device)[None, :]
        return ang.cos(), ang.sin()

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x: [B, H, L, Dh]`` at positions ``offset .. offset + L - 1``."""
        pos = torch.arange(offset, offset + x.shape[-2], device=x.device)
        cos, sin = self.angles(pos)
        return apply_rotary(x, cos.to(x.dtype), sin.to(x.dtype))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x: [..., L, Dh]``, ``cos/sin: [L, Dh/2]``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
