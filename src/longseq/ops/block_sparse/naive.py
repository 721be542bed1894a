"""Readable references of the block-local and block-sparse attention kernels of :mod:`.block`.

Both are softmax attention ``o = softmax(q k^T * scale + mask) v`` (Vaswani et al. 2017, eq. 1)
restricted to a set of allowed (query, key) pairs; here the ``L x L`` mask is built densely and
one masked softmax runs over it:

* :func:`local_mask` — sliding window (Longformer/local attention): ``0 <= i - j < window``
  (causal) or ``|i - j| < window``;
* :func:`block_mask` — the token mask of a key-block table (BigBird, Hypercube, block butterfly):
  query ``i`` may see key ``j`` iff ``j``'s block is listed for ``i``'s block (and ``j <= i`` when
  causal);
* :func:`masked_attention_naive` — the dense masked softmax (and its log-sum-exp). A row with no
  allowed key gets zero output here (the fast kernels give such rows — only padded queries —
  uniform weights; tests compare real rows only).
"""

from __future__ import annotations

import torch

__all__ = ["masked_attention_naive", "local_mask", "block_mask"]


def local_mask(L: int, window: int, causal: bool, device=None) -> torch.Tensor:
    """``[L, L]`` bool: query ``i`` sees key ``j`` iff ``0 <= i - j < window`` (causal) or ``|i - j| < window``."""
    i = torch.arange(L, device=device)
    rel = i[:, None] - i[None, :]  # [L, L]: i - j
    return ((rel >= 0) & (rel < window)) if causal else (rel.abs() < window)


def block_mask(key_blocks: torch.Tensor, block_size: int, L: int, causal: bool) -> torch.Tensor:
    """``key_blocks [B|1, H|1, n, m]`` (entries in ``[0, n)``, -1 = none) -> ``[B|1, H|1, L, L]`` bool."""
    n = key_blocks.shape[2]
    kb = key_blocks.long()
    blocks = torch.zeros(*kb.shape[:2], n, n + 1, dtype=torch.bool, device=kb.device)  # last column: "none"
    blocks.scatter_(-1, torch.where(kb < 0, n, kb), True)
    blocks = blocks[..., :n]  # [B|1, H|1, n, n]
    tok = torch.arange(L, device=kb.device) // block_size  # block of each token
    allowed = blocks[..., tok, :][..., tok]  # [B|1, H|1, L, L]
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=kb.device).tril()
    return allowed


def masked_attention_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    scale: float | None = None,
):
    """``q, k, v [B, H, L, Dh]``, ``allowed`` bool broadcastable to ``[B, H, L, L]``, ``key_mask [B, L]``
    (True = real key) -> ``(o [B, H, L, Dh], lse [B, H, L])``: the dense masked softmax."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]
    s = (q @ k.transpose(-1, -2)) * scale  # [B, H, L, L]
    s = s.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(s, -1)  # [B, H, L]
    p = torch.exp(s - lse.nan_to_num(neginf=0.0)[..., None]).nan_to_num(0.0)
    return p @ v, lse
