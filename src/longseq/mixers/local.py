"""Sliding-window (local) attention: the local part of Longformer (Beltagy et al. 2020, sec. 3.1)
and LongT5 (Guo et al. 2022, sec. 3.1.1), the short-range half of Transformer-LS (Zhu et al. 2021).

Each query attends with ordinary softmax attention (Vaswani et al. 2017, eq. 1) to the keys
within its window only:

    causal:         j in [i - window + 1, i]             (the last ``window`` tokens incl. itself)
    bidirectional:  |i - j| < window                     (``2 * window - 1`` tokens)

Decisions:
* ``window`` is LongT5's "block_len" (= local radius + 1) in both modes: the bidirectional window
  is symmetric with radius ``window - 1`` (Longformer's total width w corresponds to
  ``window = w / 2 + 1``). Default 128 = LongT5's radius 127. The causal window is the one of
  SPADE's and Transformer-LS's causal models: exactly the last ``window`` tokens.
* Computed blockwise by :func:`longseq.ops.local_attention` (query blocks of ``window`` tokens
  see the neighbouring key blocks): O(N * window) time and memory, no N x N matrix.
* ``step`` keeps a rolling KV cache of the last ``window`` keys/values (slot ``p % window`` holds
  position ``p``): O(window) memory and time per token; RoPE (``rope=True``) rotates with absolute
  positions before caching, so the cache order does not matter.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..nn.rotary import RotaryEmbedding
from ..ops.block_sparse import local_attention
from ..utils.validate import check_int
from .base import Mixer, register


def local_flops(L: int, d: int, h: int, causal: bool, window: int = 128) -> float:
    keys = min(window, L) if causal else min(2 * window - 1, L)
    return float(2 * L * d * 4 * d + 2 * 2 * L * keys * d)


@register(
    "local",
    family="sparse attention",
    paper="Beltagy et al. 2020, Longformer (sliding window); Guo et al. 2022, LongT5 (local attention)",
    complexity="O(N w)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=local_flops,
)
class LocalAttention(Mixer):
    """Multi-head sliding-window softmax attention with optional RoPE and a rolling KV cache."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        window: int = 128,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_int("window", window, min=1, owner="local")
        self.window = window
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window={self.window}, rope={self.rope is not None}"

    def _qkv(self, x, offset):
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if self.rope is not None:
            q, k = self.rope(q, offset), self.rope(k, offset)
        return q, k, v  # [B, H, L, Dh] each

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        offset = 0 if state is None else state["len"]
        q, k, v = self._qkv(x, offset)
        if state is None:
            o = local_attention(q, k, v, self.window, self.causal, mask)
            return self.out(rearrange(o, "b h l d -> b l (h d)")), None
        # Continue a sequence: prepend the cached keys (at most window - 1 are still visible).
        k_prev, v_prev = _cache_read(state, min(offset, self.window - 1))  # [B, H, P, Dh]
        P = k_prev.shape[2]
        k_all, v_all = torch.cat([k_prev, k], 2), torch.cat([v_prev, v], 2)
        q_all = torch.cat([q.new_zeros(B, self.num_heads, P, self.head_dim), q], 2)
        o = local_attention(q_all, k_all, v_all, self.window, True)[:, :, P:]
        new_state = _cache_write(state, k_all, v_all, offset - P)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    def _step(self, x_t, state):
        n = state["len"]
        q, k, v = self._qkv(x_t[:, None], n)  # [B, H, 1, Dh]
        state = _cache_write(state, k, v, n)
        seen = min(n + 1, self.window)  # filled slots (order irrelevant)
        k_c, v_c = state["k"][:, :, :seen], state["v"][:, :, :seen]
        w = torch.softmax(torch.matmul(q, k_c.transpose(-1, -2)) * self.head_dim**-0.5, dim=-1)
        o = torch.matmul(w, v_c)  # [B, H, 1, Dh]
        return self.out(rearrange(o, "b h l d -> b (l h d)")), state

    def _init_state(self, batch_size, device, dtype):
        shape = (batch_size, self.num_heads, self.window, self.head_dim)
        return {
            "k": torch.zeros(shape, device=device, dtype=dtype),
            "v": torch.zeros(shape, device=device, dtype=dtype),
            "len": 0,
        }

    def state_size(self, seq_len):
        return 2 * self.d_model * min(seq_len, self.window)


def _cache_read(state: dict, count: int):
    """The last ``count`` cached keys/values in position order, ``[B, H, count, Dh]``."""
    n, W = state["len"], state["k"].shape[2]
    slots = torch.arange(n - count, n, device=state["k"].device) % W
    return state["k"].index_select(2, slots), state["v"].index_select(2, slots)


def _cache_write(state: dict, k: torch.Tensor, v: torch.Tensor, start: int) -> dict:
    """Store ``k, v: [B, H, T, Dh]`` (positions ``start .. start + T - 1``) in the rolling cache;
    only the last ``window`` positions are kept. Out of place when gradients flow."""
    W, T = state["k"].shape[2], k.shape[2]
    keep = min(T, W)
    pos = torch.arange(start + T - keep, start + T, device=k.device)
    k, v = k[:, :, T - keep :], v[:, :, T - keep :]
    if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
        kc, vc = state["k"].index_copy(2, pos % W, k), state["v"].index_copy(2, pos % W, v)
    else:
        kc, vc = state["k"].index_copy_(2, pos % W, k), state["v"].index_copy_(2, pos % W, v)
    return {"k": kc, "v": vc, "len": start + T}
