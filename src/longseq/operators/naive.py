"""Readable references for the Fourier layers: explicit DFT matrices, no FFT (for the tests).

y[n] = (1/N) sum_{k kept} c_k Re( (sum_i W_{i,o,k} X_{i,k}) e^{2 pi i k n / N} ),
X_{i,k} = sum_n x_{i,n} e^{-2 pi i k n / N}, with c_k = 1 for k = 0 and for k = N/2 (even N), 2 otherwise:
the real signal whose spectrum is the kept modes multiplied by W and completed by Hermitian symmetry
(what ``irfft`` computes; at k = 0 and N/2 only the real part survives). In 2D the sum runs over the
kept first-axis frequencies (both signs) and the non-negative second-axis ones with c over the second axis.
"""

from __future__ import annotations

import math

import torch


def _dft(n: int, freqs: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of 2 pi f j / n: ``[len(freqs), n]`` each."""
    j = torch.arange(n, dtype=dtype)
    ang = 2 * math.pi * freqs.to(dtype)[:, None] * j[None, :] / n
    return torch.cos(ang), torch.sin(ang)


def spectral_conv1d_naive(x: torch.Tensor, weight: torch.Tensor, modes: int) -> torch.Tensor:
    """x ``[B, Ci, N]`` real, weight ``[Ci, Co, modes]`` complex -> ``[B, Co, N]``."""
    n = x.shape[-1]
    k = torch.arange(min(modes, n // 2 + 1))
    cos, sin = _dft(n, k, x.dtype)  # [K, N]
    X = torch.complex(x @ cos.T, -(x @ sin.T))  # [B, Ci, K]
    Y = torch.einsum("bik,iok->bok", X, weight[..., : len(k)])  # [B, Co, K]
    c = torch.full((len(k),), 2.0, dtype=x.dtype)
    c[0] = 1.0
    if n % 2 == 0 and len(k) == n // 2 + 1:
        c[-1] = 1.0
    # Re(Y e^{i theta}) = Re Y cos - Im Y sin
    return ((Y.real * c) @ cos - (Y.imag * c) @ sin) / n


def spectral_conv2d_naive(
    x: torch.Tensor, weight1: torch.Tensor, weight2: torch.Tensor, modes1: int, modes2: int
) -> torch.Tensor:
    """x ``[B, Ci, N1, N2]``, weights ``[Ci, Co, m1, m2]`` complex (non-negative / negative first-axis
    frequencies) -> ``[B, Co, N1, N2]``."""
    n1, n2 = x.shape[-2:]
    neg = min(modes1, n1 // 2)
    pos = min(modes1, n1 - neg)
    k2 = min(modes2, n2 // 2 + 1)
    f1 = torch.cat([torch.arange(pos), -torch.arange(neg, 0, -1)])  # kept first-axis frequencies
    w = torch.cat([weight1[:, :, :pos, :k2], weight2[:, :, modes1 - neg :, :k2]], dim=2)  # [Ci, Co, K1, K2]
    c1, s1 = _dft(n1, f1, x.dtype)  # [K1, N1]
    c2, s2 = _dft(n2, torch.arange(k2), x.dtype)  # [K2, N2]
    e1 = torch.complex(c1, -s1)  # e^{-i theta}
    e2 = torch.complex(c2, -s2)
    X = torch.einsum("bimn,km,ln->bikl", x.to(e1.dtype), e1, e2)  # [B, Ci, K1, K2]
    Y = torch.einsum("bikl,iokl->bokl", X, w)
    c = torch.full((k2,), 2.0, dtype=x.dtype)
    c[0] = 1.0
    if n2 % 2 == 0 and k2 == n2 // 2 + 1:
        c[-1] = 1.0
    y = torch.einsum("bokl,km,ln->bomn", Y * c, e1.conj(), e2.conj())  # sum c Y e^{+i theta}
    return y.real / (n1 * n2)
