"""Exact multi-head softmax attention (Vaswani et al. 2017, "Attention Is All You Need", eq. 1):

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V

``softmax`` computes it with ``torch.nn.functional.scaled_dot_product_attention``, which
dispatches to the IO-aware fused kernels (FlashAttention, Dao et al. 2022; memory-efficient
attention) where the device has them and never materialises the N x N matrix there.
``softmax_naive`` materialises the N x N scores: the O(N^2)-memory reference and baseline.
Both share parameters, so a state dict moves between them.

``proj`` (``dense`` | ``butterfly`` | ``tensor_chain``, options in ``proj_options``) replaces the
q/k/v projections -- each d x d matrix factorised separately -- and, unless ``proj_out=False``,
the output projection by structured layers (Pixelfly's flat block butterfly + low rank, Anthe's
tensor chain; see :mod:`longseq.nn.linear`). ``dense`` keeps the fused ``nn.Linear``.

``relpos`` adds a position term to the logits (DeBERTa disentangled attention, DIET; see
:mod:`longseq.nn.relpos`): it gives a float bias ``[B|1, H, Lq, Lk]`` and the content scale,
and the boolean mask enters that bias as ``-inf``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn.kvcache import kv_append, kv_init
from ..nn.linear import make_fused_linear, make_linear
from ..nn.relpos import make_position_layer
from ..nn.rotary import RotaryEmbedding
from ..utils.validate import check_probability
from .base import Mixer, register


def attention_flops(L: int, d: int, h: int, causal: bool) -> float:
    proj = 2 * L * d * 4 * d  # q, k, v and output projections
    core = 2 * 2 * L * L * d * (0.5 if causal else 1.0)  # QK^T and AV
    return float(proj + core)


def allowed_keys(mask: torch.Tensor | None, L_q: int, L_k: int, causal: bool, device) -> torch.Tensor | None:
    """Boolean ``[B|1, 1, L_q, L_k]`` of (query, key) pairs that may interact; None = all.

    Queries are the last ``L_q`` of ``L_k`` positions (a KV cache prefix precedes them). A query
    always sees its own position, so rows of padded queries are never empty (no NaN; the base
    class zeroes their outputs).
    """
    if mask is None and not causal:
        return None
    q_pos = torch.arange(L_k - L_q, L_k, device=device)[:, None]  # [Lq, 1]
    k_pos = torch.arange(L_k, device=device)[None, :]  # [1, Lk]
    allowed = (k_pos <= q_pos) if causal else torch.ones(L_q, L_k, dtype=torch.bool, device=device)
    allowed = allowed[None, None]  # [1, 1, Lq, Lk]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    return allowed | (k_pos == q_pos)[None, None]


def rotate_and_cache(q, k, v, rope, state):
    """The preamble of every q·k attention with a KV cache: RoPE at the cache's offset, then the new
    keys/values appended. ``q, k, v: [B, H, L, Dh]`` -> ``(q, k, v, new_state)``, k and v now
    covering cache + new tokens (``new_state`` None without a state)."""
    offset = 0 if state is None else state["len"]
    if rope is not None:
        q, k = rope(q, offset), rope(k, offset)
    if state is None:
        return q, k, v, None
    k, v, new_state = kv_append(state, k, v)
    return q, k, v, new_state


@register(
    "softmax",
    family="exact attention",
    paper="Vaswani et al. 2017, Attention Is All You Need; IO-aware kernels: Dao et al. 2022, FlashAttention",
    complexity="O(N^2)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=attention_flops,
)
class SoftmaxAttention(Mixer):
    """Multi-head softmax attention through SDPA, with optional RoPE, logit position terms
    (``relpos``) and a KV cache for ``step``."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        rope: bool = False,
        dropout: float = 0.0,
        bias: bool = False,
        relpos: Any = None,
        proj: str = "dense",
        proj_options: dict | None = None,
        proj_out: bool = True,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        # proj: linear kind of the q/k/v (and, with proj_out, output) projections (nn.linear.make_linear)
        popts = dict(proj_options or {})
        self.qkv = make_fused_linear(proj, d_model, [d_model] * 3, bias, **popts)
        self.out = make_linear(proj, d_model, d_model, bias, **popts) if proj_out else nn.Linear(d_model, d_model, bias)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None
        self.dropout = float(check_probability("dropout", dropout, owner=self.spec.name))
        self.relpos = make_position_layer(relpos, d_model, num_heads)

    def _attend(self, q, k, v, allowed, is_causal, bias=None, scale=None):
        """q: [B, H, Lq, Dh], k/v: [B, H, Lk, Dh] -> [B, H, Lq, Dh]; ``bias``: float logit term
        ``[B|1, H, Lq, Lk]`` added after scaling ``q k^T`` by ``scale`` (default 1/sqrt(Dh))."""
        p = self.dropout if self.training else 0.0
        if bias is not None:
            allowed = bias if allowed is None else torch.where(allowed, bias, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p, is_causal=is_causal, scale=scale)

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        q, k, v, new_state = rotate_and_cache(q, k, v, self.rope, state)
        L_k = k.shape[2]
        bias, scale = self.relpos(q, k, self.qkv) if self.relpos is not None else (None, None)
        if mask is None and self.causal and L_k == L and bias is None:
            o = self._attend(q, k, v, None, True)  # fused causal path
        else:
            causal = self.causal and L > 1  # one new token sees the whole cache
            o = self._attend(q, k, v, allowed_keys(mask, L, L_k, causal, x.device), False, bias, scale)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    def _init_state(self, batch_size, device, dtype):
        return kv_init(batch_size, self.num_heads, self.head_dim, self.head_dim, device, dtype)

    def state_size(self, seq_len):
        return 2 * self.d_model * seq_len


@register(
    "softmax_naive",
    family="exact attention",
    paper="Vaswani et al. 2017, Attention Is All You Need (materialised N x N reference)",
    complexity="O(N^2)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=attention_flops,
)
class SoftmaxAttentionNaive(SoftmaxAttention):
    """``softmax(Q K^T / sqrt(d)) V`` with the score matrix materialised (O(N^2) memory)."""

    def _attend(self, q, k, v, allowed, is_causal, bias=None, scale=None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * scale  # [B, H, Lq, Lk]
        if bias is not None:
            scores = scores + bias
        if is_causal:
            allowed = allowed_keys(None, q.shape[2], k.shape[2], True, q.device)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        attn = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        return torch.einsum("bhij,bhjd->bhid", attn, v)
