"""A growing key/value cache for attention mixers in recurrent (token-by-token) use.

The cache keeps buffers of capacity C >= n and doubles C when full, so appending a token is
amortised O(1) instead of the O(n) copy of ``torch.cat``. Appending writes in place: a state
must not be reused after it was extended (see the mixer contract).
"""

from __future__ import annotations

import torch


def kv_init(batch: int, heads: int, k_dim: int, v_dim: int, device, dtype, capacity: int = 64) -> dict:
    return {
        "k": torch.zeros(batch, heads, capacity, k_dim, device=device, dtype=dtype),  # [B, H, C, Dk]
        "v": torch.zeros(batch, heads, capacity, v_dim, device=device, dtype=dtype),  # [B, H, C, Dv]
        "len": 0,
    }


def kv_append(state: dict, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Append ``k: [B, H, L, Dk]``, ``v: [B, H, L, Dv]``; return all keys/values so far and the state."""
    n, L = state["len"], k.shape[2]
    kb, vb = state["k"], state["v"]
    if n + L > kb.shape[2]:
        cap = max(2 * kb.shape[2], n + L)
        kb = torch.cat([kb[:, :, :n], kb.new_zeros(*kb.shape[:2], cap - n, kb.shape[3])], dim=2)
        vb = torch.cat([vb[:, :, :n], vb.new_zeros(*vb.shape[:2], cap - n, vb.shape[3])], dim=2)
    if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
        # Keep autograd exact: build the cache out of place when gradients flow through it.
        kb = torch.cat([kb[:, :, :n], k, kb[:, :, n + L :]], dim=2)
        vb = torch.cat([vb[:, :, :n], v, vb[:, :, n + L :]], dim=2)
    else:
        kb[:, :, n : n + L] = k
        vb[:, :, n : n + L] = v
    new = {"k": kb, "v": vb, "len": n + L}
    return kb[:, :, : n + L], vb[:, :, : n + L], new
