"""Readable reference of S4's kernel and convolution (Gu, Goel, Ré 2022, S4, Section 3.3, Lemma C.3,
Algorithm 1), with dense linear algebra instead of Cauchy sums and FFT convolution.

The state space is real: the ``N/2`` parameters ``Λ, P, B, C̃`` stand for ``N`` states, the second
half their conjugates. With ``A = diag(Λ, conj Λ) - p p*`` (``p = [P; conj P]``), the kernel's
spectrum at the ``n``-th roots of unity ``ω_k = exp(-2πi k/n)`` is (Algorithm 1, multiplied
through by ``(1+ω)/2`` as in :mod:`longseq.ops.cauchy.fused`)::

    K̂(ω) = c̃^T (t I - s A)^{-1} b,     t = (1-ω)/Δ,  s = (1+ω)/2                    (1)

solved densely (``[N, N]`` per frequency), ``K = irfft(K̂, n)[:L]`` (``n = l_max``, for which ``C̃`` is
parameterised), then ``y_l = sum_{m<=l} K_{l-m} u_m (+ sum_{m>l} K'_{m-l-1} u_m) + D u_l`` by the
dense Toeplitz product of :func:`longseq.ops.fftconv.naive.conv_naive`.
"""

from __future__ import annotations

import math

import torch

from ..fftconv.naive import conv_naive

__all__ = ["s4_kernel_naive", "s4_conv_naive"]


def s4_kernel_naive(
    Lam: torch.Tensor, P: torch.Tensor, B: torch.Tensor, Ct: torch.Tensor, dt: torch.Tensor, n: int, L: int
) -> torch.Tensor:
    """(1): ``Λ, P, B [H, N/2]``, ``C̃ [dirs, H, N/2]`` complex, ``Δ [H]`` -> real ``K [dirs, H, L]``."""
    lam = torch.cat([Lam, Lam.conj()], -1)  # [H, N]
    p, b = torch.cat([P, P.conj()], -1), torch.cat([B, B.conj()], -1)  # [H, N]
    c = torch.cat([Ct, Ct.conj()], -1)  # [dirs, H, N]
    A = torch.diag_embed(lam) - p.unsqueeze(-1) * p.conj().unsqueeze(-2)  # [H, N, N]
    k = torch.arange(n // 2 + 1, dtype=dt.dtype, device=dt.device)
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / n)  # [F]
    t = (1 - omega) / dt[:, None]  # [H, F]
    s = (1 + omega) / 2  # [F]
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    M = t[..., None, None] * eye - s[:, None, None] * A[:, None]  # [H, F, N, N]
    x = torch.linalg.solve(M, b[:, None, :].expand(-1, M.shape[1], -1))  # [H, F, N]
    Khat = (c.unsqueeze(-2) * x).sum(-1)  # [dirs, H, F]
    return torch.fft.irfft(Khat, n=n)[..., :L]


def s4_conv_naive(
    u: torch.Tensor,
    Lam: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    Ct: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor,
    l_max: int,
    causal: bool,
) -> torch.Tensor:
    """The arguments of :func:`.fused.s4_conv` (no block size): ``u [B, L, H]`` -> ``[B, L, H]``."""
    K = s4_kernel_naive(Lam, P, B, Ct, dt, l_max, u.shape[1])  # [dirs, H, L]
    return conv_naive(u.transpose(1, 2), K[:1] if causal else K, D).transpose(1, 2)
