"""Readable reference of S5's SSM (Smith, Warrington, Linderman 2023, S5, eq. (6)-(7)).

``h_t = Λ̄ h_{t-1} + B̄ u_t`` from ``h_{-1} = 0``, ``y_t = 2 Re(C̃ h_t) + D u_t``; when
bidirectional (``C`` holds two readouts) a second state runs backwards in time,
``h'_t = Λ̄ h'_{t+1} + B̄ u_t``, read out by the second ``C̃`` and added. One Python loop over
time, everything materialised: for tests and for reading, not for speed.
"""

from __future__ import annotations

import torch

__all__ = ["s5_ssm_naive"]


def s5_ssm_naive(
    u: torch.Tensor, Lbar: torch.Tensor, Bbar: torch.Tensor, C: torch.Tensor, D: torch.Tensor
) -> torch.Tensor:
    """``u [B, L, H]`` real, ``Λ̄ [P/2]``, ``B̄ [P/2, H]`` complex, ``C [dirs, H, P/2, 2]`` real
    (real and imaginary parts of ``C̃``), ``D [H]`` -> ``y [B, L, H]``."""
    Ct = torch.view_as_complex(C.contiguous())  # [dirs, H, P/2]
    Bu = torch.einsum("ph,blh->blp", Bbar, u.to(Bbar.dtype))  # [B, L, P/2]
    y = u * D  # [B, L, H]
    L = u.shape[1]
    for d in range(Ct.shape[0]):
        h = torch.zeros_like(Bu[:, 0])  # [B, P/2]
        hs = [None] * L
        for t in range(L) if d == 0 else range(L - 1, -1, -1):
            h = Lbar * h + Bu[:, t]
            hs[t] = h
        H_ = torch.stack(hs, 1)  # [B, L, P/2]
        y = y + 2 * torch.einsum("hp,blp->blh", Ct[d], H_).real
    return y
