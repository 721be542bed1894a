"""Readable references of the Vandermonde products of diagonal SSMs (S4D, Gu et al. 2022, "On the
Parameterization and Initialization of Diagonal State Space Models", Section 3.2, eq. (6)).

The powers ``z^l = exp(l log z)`` are materialised as a complex ``[..., N, L]`` tensor and
summed: ``O(N L)`` memory per channel, which the fast :mod:`.chunk` avoids.
"""

from __future__ import annotations

import torch

__all__ = ["vandermonde_naive", "vandermonde_transposed_naive"]


def vandermonde_naive(w: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """``K[..., h, l] = Re sum_n w[..., h, n] z[h, n]^l`` for ``l < L``: ``w [..., H, N]`` complex,
    ``log_z [H, N]`` (per channel) or ``[N]`` (shared) -> real ``[..., H, L]``."""
    lags = torch.arange(L, dtype=log_z.real.dtype, device=log_z.device)
    Z = torch.exp(log_z.unsqueeze(-1) * lags)  # [H|, N, L]
    return (w.unsqueeze(-1) * Z).real.sum(-2)


def vandermonde_transposed_naive(u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """The state after ``u`` from zero, ``x[..., h, n] = sum_l z[h, n]^(L-1-l) u[..., h, l]``:
    ``u [..., H, L]`` real -> complex ``[..., H, N]``."""
    L = u.shape[-1]
    lags = torch.arange(L - 1, -1, -1, dtype=log_z.real.dtype, device=log_z.device)
    Z = torch.exp(log_z.unsqueeze(-1) * lags)  # [H|, N, L]: z^(L-1-l)
    return (Z * u.to(Z.dtype).unsqueeze(-2)).sum(-1)
