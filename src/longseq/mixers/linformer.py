"""Linformer (Wang, Li, Khabsa, Fang, Ma 2020, "Linformer: Self-Attention with Linear Complexity",
arXiv 2006.04768).

Keys and values are projected along the SEQUENCE axis from length N to a fixed k by learned
matrices E, F in R^{k x n} (eq. 7):

    head_i = softmax( Q W_i^Q (E_i K W_i^K)^T / sqrt(d_head) ) (F_i V W_i^V)

so attention costs O(N k) time and memory instead of O(N^2). Bidirectional only (the projection
mixes all positions; the paper has no causal form).

Decisions:

* Fixed maximum length ``max_len`` (default 4096, the longest LRA task; pass e.g. 16384 for
  longer inputs): E and F have ``max_len`` columns, the base class rejects longer inputs, and a
  shorter input of length L uses the first L columns (as in the official fairseq code, which
  slices the compression weight to the input length). E and F are ``k x max_len`` parameters per
  layer, so a large ``max_len`` costs parameters.
* Parameter sharing (sec. 4, "Additional efficiency techniques"): ``sharing="headwise"``
  (default: one E and one F per layer shared by all heads), ``"kv"`` (headwise and E = F) or
  ``"none"`` (E_i, F_i per head). Layer-wise sharing spans layers and is outside a mixer.
* Padding: the base class zeroes padded inputs; keys and values of padded positions are zeroed
  again after their projections (biases would make them non-zero) BEFORE the E/F projection, so
  padded keys contribute nothing and a right-padded sequence gives exactly the outputs of the
  unpadded one (same first L columns of E and F).
* Init: E, F ~ U(-a, a) with xavier-uniform bound for fan_in = max_len, fan_out = k and gain
  1/sqrt(2) (the fairseq reference scales its query/key/value/compression inits this way, as remembered;
  not re-checked against the code here);
  the projected keys then have O(1) scale for L = max_len.
* No RoPE option: the projected keys E K mix all positions, so a rotation by position has no
  relative meaning in the scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..utils.validate import check_choice, check_int, check_probability
from .base import Mixer, register

SHARING = ("headwise", "kv", "none")


def linformer_flops(L: int, d: int, h: int, causal: bool, k: int = 256) -> float:
    proj = 2 * L * d * 4 * d  # q, k, v and output projections
    compress = 2 * 2 * k * L * d  # E K and F V
    core = 2 * 2 * L * k * d  # Q (EK)^T and A (FV)
    return float(proj + compress + core)


@register(
    "linformer",
    family="low-rank attention",
    paper="Wang et al. 2020, Linformer: Self-Attention with Linear Complexity",
    complexity="O(N k)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=linformer_flops,
    max_len_option="max_len",
)
class LinformerAttention(Mixer):
    """Multi-head attention over keys/values compressed along the sequence by learned E, F."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        k: int = 256,
        max_len: int = 4096,
        sharing: str = "headwise",
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_int("k (projected length)", k, min=1, owner="linformer")
        check_int("max_len", max_len, min=1, owner="linformer")
        check_choice("sharing", sharing, SHARING, owner="linformer")
        check_probability("dropout", dropout, owner="linformer")
        self.k, self.sharing, self.dropout = k, sharing, float(dropout)
        self.max_len = max_len
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        n_proj = num_heads if sharing == "none" else 1
        bound = math.sqrt(6.0 / (max_len + k)) / math.sqrt(2.0)
        self.E = nn.Parameter(torch.empty(n_proj, k, max_len).uniform_(-bound, bound))  # [H|1, k, N]
        self.F = None if sharing == "kv" else nn.Parameter(torch.empty(n_proj, k, max_len).uniform_(-bound, bound))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k={self.k}, max_len={self.max_len}, sharing={self.sharing!r}"

    def _forward(self, x, mask, state, return_state):
        L = x.shape[1]
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, L, d]
        if mask is not None:
            keep = mask[..., None].to(x.dtype)  # [B, L, 1]
            k, v = k * keep, v * keep
        heads = lambda t: rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)  # noqa: E731
        # The first L columns (no slice at L == max_len: its backward would zero-fill and copy).
        first = (lambda P: P) if L == self.max_len else (lambda P: P[:, :, :L])  # noqa: E731
        E = first(self.E).to(k.dtype)  # [H|1, k, L]
        Fm = E if self.F is None else first(self.F).to(v.dtype)
        if E.shape[0] == 1:
            # One E (F) for all heads: compress before splitting heads, one [k, L] @ [L, d] GEMM
            # per batch element instead of a broadcast batched matmul over strided head views.
            k, v = heads(E.squeeze(0) @ k), heads(Fm.squeeze(0) @ v)  # [B, H, k, Dh]
        else:
            k, v = E @ heads(k), Fm @ heads(v)  # [B, H, k, Dh]
        q = heads(q)  # [B, H, L, Dh] (view)
        p = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # [B, H, L, Dh]
        return self.out(rearrange(o, "b h l d -> b l (h d)")), None
