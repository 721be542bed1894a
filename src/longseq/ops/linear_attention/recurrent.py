"""Token-by-token normalised linear attention (Katharopoulos et al. 2020, eq. 18-20, the RNN view):
``S_t = S_{t-1} + k_t v_t^T``, ``z_t = z_{t-1} + k_t``, ``o_t = q_t^T S_t / (q_t^T z_t + eps)``."""

from __future__ import annotations

import torch

from .chunk import State, _normalise, _zero_state

__all__ = ["linear_attention_recurrent"]


def linear_attention_recurrent(
    q,
    k,
    v,
    *,
    eps: float = 1e-6,
    initial_state: State | None = None,
    output_final_state: bool = False,
):
    """Token-by-token recurrence ``S_t = S_{t-1} + k_t v_t^T``, ``z_t = z_{t-1} + k_t``."""
    S, z = initial_state if initial_state is not None else _zero_state(q, v)
    outs = []
    for t in range(q.shape[2]):
        q_t, k_t, v_t = q[:, :, t], k[:, :, t], v[:, :, t]  # [B, H, D]
        S = S + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)  # [B, H, Dk, Dv]
        z = z + k_t
        num = torch.einsum("bhd,bhde->bhe", q_t, S)
        outs.append(_normalise(num, (q_t * z).sum(-1), eps))
    o = torch.stack(outs, dim=2)  # [B, H, L, Dv]
    return o, ((S, z) if output_final_state else None)
