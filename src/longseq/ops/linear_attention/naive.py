"""Readable reference of normalised linear attention (Katharopoulos et al. 2020, "Transformers are
RNNs", eq. 4-6): the dense ``L x L`` kernel matrix ``A = q k^T`` materialised, masked (causal), and
each row normalised, ``o_i = sum_j A_ij v_j / (sum_j A_ij + eps)``. A denominator that underflows
(below sqrt(tiny) of the dtype) gives 0, as in the fast forms of :mod:`.chunk`.
"""

from __future__ import annotations

import torch

__all__ = ["linear_attention_naive"]

State = tuple[torch.Tensor, torch.Tensor]


def _normalise(num: torch.Tensor, den: torch.Tensor, eps: float) -> torch.Tensor:
    """``num [..., Dv] / (den [...] + eps)``, 0 where the denominator underflows."""
    den = (den + eps).unsqueeze(-1)
    ok = ~(den <= torch.finfo(den.dtype).tiny ** 0.5)  # NaN compares False: kept, so NaN propagates
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def linear_attention_naive(
    q,
    k,
    v,
    *,
    causal: bool = True,
    eps: float = 1e-6,
    initial_state: State | None = None,
    output_final_state: bool = False,
):
    """Dense reference: ``A = q k^T`` materialised ([B, H, L, L]), masked, normalised row-wise.

    The signature of :func:`.chunk.linear_attention_chunk`: ``q, k [B, H, L, Dk]``, ``v [B, H, L, Dv]``,
    ``initial_state = (S [B, H, Dk, Dv], z [B, H, Dk])``; returns ``(o [B, H, L, Dv], final_state or None)``
    with ``final_state = (S + k^T v, z + sum_j k_j)`` (causal only: a state is a prefix).
    """
    A = torch.einsum("bhid,bhjd->bhij", q, k)  # [B, H, L, L]
    if causal:
        A = A.tril()
    num = A @ v  # [B, H, L, Dv]
    den = A.sum(-1)  # [B, H, L]
    if initial_state is not None:
        S0, z0 = initial_state
        num = num + q @ S0
        den = den + torch.einsum("bhid,bhd->bhi", q, z0)
    final = None
    if output_final_state:
        S, z = k.transpose(-1, -2) @ v, k.sum(2)  # [B, H, Dk, Dv], [B, H, Dk]
        final = (S, z) if initial_state is None else (initial_state[0] + S, initial_state[1] + z)
    return _normalise(num, den, eps), final
