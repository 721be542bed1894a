"""Readable reference of Transformer-LS causal long-short attention (Zhu et al. 2021, Section 3.3
eq. (5), autoregressive form of Section 3.4): the scores against both key sets are built densely,
masked, and go through ONE softmax::

    A = softmax([q K_bar^T ; q_w K_win^T] / sqrt(Dh)),    o = A [V_bar ; V_win]

query ``i`` sees compressed key ``j`` iff ``key_chunk[j] < q_chunk[i]`` (and ``long_ok``), window key
``j`` (of ``n_w + L``, the cached ones first) iff ``0 <= n_w + i - j < window`` (and ``win_ok``).
A query with no allowed key gets 0.
"""

from __future__ import annotations

import torch

__all__ = ["causal_long_short_attention_naive"]


def causal_long_short_attention_naive(
    q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, n_w: int, window: int
) -> torch.Tensor:
    """The arguments of :func:`.fused.causal_long_short_attention` (no block size) -> ``o [B, H, L, Dh]``."""
    L, scale = q.shape[2], q.shape[-1] ** -0.5
    allowed_l = key_chunk[None, :] < q_chunk[:, None]  # [L, M]
    if long_ok is not None:
        allowed_l = allowed_l & long_ok[:, None, :]  # [B, L, M]
    rel = (n_w + torch.arange(L, device=q.device))[:, None] - torch.arange(kw.shape[2], device=q.device)[None, :]
    allowed_w = (rel >= 0) & (rel < window)  # [L, n_w + L]
    if win_ok is not None:
        allowed_w = allowed_w & win_ok[:, None, :]  # [B, L, n_w + L]
    allowed_l, allowed_w = (a if a.dim() == 3 else a[None] for a in (allowed_l, allowed_w))
    s = (
        torch.cat(
            [
                (q @ kl.transpose(-1, -2)).masked_fill(~allowed_l[:, None], float("-inf")),
                (qw @ kw.transpose(-1, -2)).masked_fill(~allowed_w[:, None], float("-inf")),
            ],
            -1,
        )
        * scale
    )
    p = torch.softmax(s, -1).nan_to_num(0.0)  # [B, H, L, M + n_w + L]; empty rows: 0
    return p @ torch.cat([vl, vw], 2)
