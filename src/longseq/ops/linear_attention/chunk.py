"""Normalised (kernel) linear attention, written once and shared by ``linear``, ``performer``, ``mlk``.

Given non-negative feature maps ``q = phi(Q)``, ``k = phi(K)`` (Katharopoulos et al. 2020,
"Transformers are RNNs", eq. 4-6), causal linear attention is

    o_i = q_i^T S_i / (q_i^T z_i + eps),   S_i = sum_{j<=i} k_j v_j^T,   z_i = sum_{j<=i} k_j

and the bidirectional form sums over all j. Following the layout of flash-linear-attention, the
causal op comes in three interchangeable forms:

* :func:`.naive.linear_attention_naive` - the dense L x L kernel matrix, masked and normalised (reference);
* :func:`linear_attention_chunk`     - chunk-parallel: quadratic inside chunks of ``chunk_size``,
  the state ``(S, z)`` carried across chunks by a prefix sum over chunks. Memory is
  O(L C + (L / C) Dk Dv): it never holds the ``[L, Dk, Dv]`` tensor of all per-token states;
* :func:`.recurrent.linear_attention_recurrent` - token by token (the RNN view, eq. 18-20), O(Dk Dv) per token.

All take ``q, k: [B, H, L, Dk]`` (already feature-mapped, >= 0), ``v: [B, H, L, Dv]`` and an
optional ``initial_state = (S [B, H, Dk, Dv], z [B, H, Dk])``; ``output_final_state`` also
returns the state after the last token, so that a sequence can be continued.

With ``eps = 0`` the result is invariant to rescaling all keys by one constant (what
Performer's stabiliser relies on); a denominator that underflows (all keys' features ~0 for
this query) gives a zero output and zero gradients instead of 0/0.
Padded keys must be given as zero feature vectors: they then contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["linear_attention_chunk", "linear_attention_bidirectional"]

State = tuple[torch.Tensor, torch.Tensor]


def _normalise(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num: [..., Dv] / (den: [...] + eps)``; 0 (with zero gradients) where the denominator
    underflows (below sqrt(tiny) of the dtype), so that neither 0/0 nor 1/den^2 overflow occurs.
    A NaN denominator (NaN/inf in the input) is not an underflow: it propagates, never becomes 0."""
    den = (den + eps).unsqueeze(-1)
    ok = ~(den <= torch.finfo(den.dtype).tiny ** 0.5)  # NaN compares False: kept, so NaN propagates
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _zero_state(q: torch.Tensor, v: torch.Tensor) -> State:
    B, H, _, Dk = q.shape
    S = q.new_zeros(B, H, Dk, v.shape[-1])
    return S, q.new_zeros(B, H, Dk)


def linear_attention_bidirectional(q, k, v, *, eps: float = 1e-6):
    """Non-causal linear attention in O(L Dk Dv): ``o = q (k^T v) / (q . sum_j k_j)``.

    The key sum rides along as an extra value column of ones, so that numerator and
    denominator come from one product ``q [k^T v, sum_j k_j]`` (and one gradient for q).
    """
    Dv = v.shape[-1]
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)  # [B, H, L, Dv + 1]
    S = k.transpose(-1, -2) @ v1  # [B, H, Dk, Dv + 1]
    num = q @ S  # [B, H, L, Dv + 1]
    return _normalise(num[..., :Dv], num[..., Dv], eps)


def exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sum over dim 2 of ``x: [B, H, N, ...]`` (the state before each chunk)."""
    return x.cumsum(2) - x


def linear_attention_chunk(
    q,
    k,
    v,
    *,
    chunk_size: int = 64,
    eps: float = 1e-6,
    initial_state: State | None = None,
    output_final_state: bool = False,
):
    """Chunk-parallel causal linear attention; returns ``(o [B, H, L, Dv], final_state | None)``.

    Inside a chunk the (C x C) masked kernel matrix is used; across chunks the state is an
    exclusive prefix sum of the per-chunk ``k^T v`` (one ``[Dk, Dv]`` matrix per chunk).
    A length that is not a multiple of ``chunk_size`` is zero-padded (zero keys add nothing).
    """
    B, H, L, Dk = q.shape
    C = min(chunk_size, L)
    pad = (-L) % C
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qc, kc, vc = (rearrange(t, "b h (n c) d -> b h n c d", c=C) for t in (q, k, v))

    kv = kc.transpose(-1, -2) @ vc  # [B, H, N, Dk, Dv]
    ks = kc.sum(3)  # [B, H, N, Dk]
    S_prev = exclusive_cumsum(kv)  # state before each chunk
    z_prev = exclusive_cumsum(ks)
    if initial_state is not None:
        S0, z0 = initial_state
        S_prev, z_prev = S_prev + S0[:, :, None], z_prev + z0[:, :, None]

    A = (qc @ kc.transpose(-1, -2)).tril()  # [B, H, N, C, C]
    num = A @ vc + qc @ S_prev  # [B, H, N, C, Dv]
    den = A.sum(-1) + (qc @ z_prev.unsqueeze(-1)).squeeze(-1)  # [B, H, N, C]
    o = rearrange(_normalise(num, den, eps), "b h n c d -> b h (n c) d")[:, :, :L]

    final = None
    if output_final_state:
        final = (S_prev[:, :, -1] + kv[:, :, -1], z_prev[:, :, -1] + ks[:, :, -1])
    return o, final
