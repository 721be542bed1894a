"""Readable references of S4's Cauchy kernel at the roots of unity (Gu, Goel, Ré 2022, S4, Section 3.3,
Lemma C.3, Algorithm 1): the Cauchy sums (C1) of :mod:`.fused` summed directly over the states, and
the Woodbury step ``K = irfft(R_a - R_b s R_c / (1 + s R_d))`` under plain autograd.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cauchy_naive", "woodbury_irfft_naive"]


def cauchy_naive(v: torch.Tensor, mu: torch.Tensor, dt: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """(C1) summed directly: ``v [..., H, N2]``, ``mu [H, N2]``, ``dt [H]``, ``omega [F]`` -> ``[..., H, F]``."""
    a, b = (1 - omega), (1 + omega)  # [F]
    d1 = a - b * mu[..., None]  # [H, N2, F]
    d2 = a - b * mu.conj()[..., None]
    r = (v[..., None] / d1 + v.conj()[..., None] / d2).sum(-2)
    return dt[:, None] * r


def woodbury_irfft_naive(
    ga: torch.Tensor, gb: torch.Tensor, gc: torch.Tensor, gd: torch.Tensor, L: int
) -> torch.Tensor:
    """``irfft(R_a - R_b s R_c / (1 + s R_d), n=L)`` with ``R_x = rfft(g_x, n=L)``, ``s = (1 + ω)/2``,
    ``ω_k = exp(-2πi k/L)``: real ``g_x [..., H, L]`` (broadcastable) -> real ``[..., H, L]``, by autograd."""
    k = torch.arange(L // 2 + 1, dtype=torch.float64, device=ga.device)
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)  # [L//2+1]
    Ra, Rb, Rc, Rd = (torch.fft.rfft(g, n=L) for g in (ga, gb, gc, gd))
    s = ((1 + omega) / 2).to(Ra.dtype)
    return torch.fft.irfft(Ra - Rb * s * Rc / (1 + s * Rd), n=L)
