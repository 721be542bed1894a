"""Readable references of FAVOR+ (Choromanski et al. 2021, Performers, Lemma 1 and Section 2.4).

* :func:`favor_softmax_features_naive` — ``phi(x)_r = exp(x_s^T w_r - |x_s|^2 / 2 - c) / sqrt(m)``,
  ``x_s = x d^(-1/4)``, with the stabiliser ``c`` of the fast version (per query: the max of
  ``x_s^T w_r``, and then ``|x_s|^2 / 2`` is dropped, being per-query too; keys: the max over real
  keys and features of the whole log-feature, per sequence and head, at least ``running_max``),
  composed from torch functions; the stabiliser is detached (a constant that normalised attention
  cancels: the official code's ``numerical_stabilizer`` has no gradient either).
* :func:`favor_attention_bidirectional_naive` — those features into the dense normalised attention
  ``o = phi(Q) phi(K)^T V / phi(Q) phi(K)^T 1`` (:func:`longseq.ops.linear_attention.linear_attention_naive`,
  ``eps = 0``), padded keys' features zeroed.
"""

from __future__ import annotations

import math

import torch

from ..linear_attention.naive import linear_attention_naive

__all__ = ["favor_softmax_features_naive", "favor_attention_bidirectional_naive"]


def favor_softmax_features_naive(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    is_query: bool,
    mask: torch.Tensor | None = None,
    running_max: torch.Tensor | None = None,
):
    """``x [B, H, L, d]``, ``w [m, d]``, ``mask [B, L]`` (True = real key) -> ``(phi [B, H, L, m], stabiliser)``."""
    d, m = x.shape[-1], w.shape[0]
    xs = x * d**-0.25
    logits = xs @ w.T  # [B, H, L, m]
    if is_query:
        stab = logits.amax(-1, keepdim=True).detach()  # [B, H, L, 1]
        return torch.exp(logits - stab) / math.sqrt(m), stab
    logits = logits - (xs * xs).sum(-1, keepdim=True) / 2
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :, None], float("-inf"))
    stab = logits.detach().amax(dim=(-2, -1)).clamp_min(torch.finfo(x.dtype).min)  # [B, H]
    if running_max is not None:
        stab = torch.maximum(stab, running_max)
    return torch.exp(logits - stab[:, :, None, None]) / math.sqrt(m), stab


def favor_attention_bidirectional_naive(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``q, k, v [B, H, L, d]``, ``w [m, d]``, ``mask [B, L]`` -> ``o [B, H, L, d]``."""
    fq, _ = favor_softmax_features_naive(q, w, is_query=True)
    fk, _ = favor_softmax_features_naive(k, w, is_query=False, mask=mask)
    return linear_attention_naive(fq, fk, v, causal=False, eps=0.0)[0]
