"""Readable reference of the SSM convolutions of :mod:`.fft` (S4 Section 3.3, S4D Section 3.2; the
bidirectional form of the S4 repository's ``bidirectional=True``): the direct sums

    y_l = sum_{m <= l} K_{l-m} u_m (+ sum_{m > l} K'_{m-l-1} u_m) + D u_l              (1), (2)

as a product with the dense ``[H, L, L]`` Toeplitz matrix, O(L^2) per channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv_naive", "toeplitz_naive"]


def toeplitz_naive(k: torch.Tensor, L: int, D: torch.Tensor | None = None) -> torch.Tensor:
    """The ``[H, L, L]`` matrix ``T[h, l, m]`` of (1)/(2) for stacked kernels ``k [C, H, <=L]`` (C = 1
    causal; C = 2: ``k[1]`` over the strict future) and an optional skip ``D [H]`` on the diagonal."""
    C, H, Lk = k.shape
    kf = F.pad(k[..., :L], (0, max(0, L - Lk)))  # [C, H, L]
    lag = torch.arange(L, device=k.device)[:, None] - torch.arange(L, device=k.device)[None, :]  # l - m
    T = torch.where(lag >= 0, kf[0][:, lag.clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))
    if C == 2:  # m > l: K'_{m-l-1}
        T = T + torch.where(lag < 0, kf[1][:, (-lag - 1).clamp(min=0)], torch.zeros((), dtype=k.dtype, device=k.device))
    if D is not None:
        T = T + torch.diag_embed(D.to(k.dtype)[:, None].expand(H, L))
    return T


def conv_naive(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """(1)/(2) plus ``D u``: ``u [..., H, L]``, ``k [C, H, <=L]``, ``D [H]`` -> ``[..., H, L]``."""
    T = toeplitz_naive(k, u.shape[-1], D)  # [H, L, L]
    return torch.einsum("hlm,...hm->...hl", T, u)
