"""Fourier layers: the kernel integral operator of the Fourier neural operator.

Li, Kovachki, Azizzadenesheli, Liu, Bhattacharya, Stuart, Anandkumar, "Fourier Neural Operator for
Parametric Partial Differential Equations" (ICLR 2021), eq. (4)-(5) and sec. 4:

    (K v)(x) = F^{-1}( R_phi . (F v) )(x),       (R . F v)_{k, l} = sum_j R_{k, l, j} (F v)_{k, j}

with F the Fourier transform, R a learned complex tensor on the lowest ``modes`` frequencies
(higher frequencies are dropped: "truncate the higher modes", sec. 4) and one complex weight per
kept mode and (input, output) channel pair. On a uniform grid F is the FFT.

Decisions the paper leaves open, from the official code (zongyi-li/fourier_neural_operator,
``fourier_1d.py`` / ``fourier_2d.py``):
* real FFT (``rfft``): only the non-negative frequencies of the last axis are stored, the rest follow
  by Hermitian symmetry; in 2D the kept modes are the two "corner" blocks ``[:m1, :m2]`` and
  ``[-m1:, :m2]`` of the ``rfft2`` spectrum (positive and negative first-axis frequencies), each with
  its own weight tensor (``weights1``, ``weights2``).
* FFT normalisation "backward" (1/N on the inverse): the spectral coefficients of a band-limited
  function scale with N and the inverse divides it out, so the layer is the same operator at every
  resolution (tested: outputs at s and 2s agree at shared points to 1e-10).
* initialisation: real and imaginary parts uniform on [0, 1/(in_channels * out_channels)); stored as
  real ``[..., 2]`` tensors (as the first official version did).
* Decision (ours): on a grid too coarse to hold ``modes`` frequencies the layer keeps those it has
  (min(modes, N//2 + 1) in the last axis; in the first axis of 2D, the positive block keeps
  min(m1, N - nb) rows and the negative block nb = min(m1, N//2) rows, each weight tied to its
  physical frequency), so the same parameters evaluate on any grid (the official code fails there).
  The Nyquist bin of an even grid, when kept, is treated as ``irfft`` treats it: only its real part
  contributes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _check(x: torch.Tensor, dims: int, channels: int, who: str) -> None:
    if x.dim() != dims + 2:
        raise ValueError(
            f"{who}: expected input [batch, channels, {', '.join('n' * dims)}] "
            f"({dims + 2} dims), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(f"{who}: expected {channels} input channels, got {x.shape[1]}")


def _complex_weight(*shape: int, scale: float) -> nn.Parameter:
    """A complex tensor stored as real ``[*shape, 2]`` (real, imaginary): real parameters keep every
    optimiser, ``.double()`` and safetensors happy; ``torch.view_as_complex`` reads it without a copy."""
    return nn.Parameter(torch.rand(*shape, 2) * scale)


class SpectralConv1d(nn.Module):
    """``[B, C_in, N] -> [B, C_out, N]``: y = irfft(W_k . rfft(x)_k for k < modes, 0 above)."""

    def __init__(self, in_channels: int, out_channels: int, modes: int):
        super().__init__()
        if min(in_channels, out_channels, modes) < 1:
            raise ValueError(
                f"SpectralConv1d: in_channels, out_channels and modes must be >= 1, "
                f"got {in_channels}, {out_channels}, {modes}"
            )
        self.in_channels, self.out_channels, self.modes = in_channels, out_channels, modes
        self.weight = _complex_weight(in_channels, out_channels, modes, scale=1.0 / (in_channels * out_channels))

    def kept_modes(self, n: int) -> int:
        return min(self.modes, n // 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, 1, self.in_channels, "SpectralConv1d")
        n = x.shape[-1]
        k = self.kept_modes(n)
        x_ft = torch.fft.rfft(x, dim=-1)[..., :k]  # [B, Ci, k] complex
        w = torch.view_as_complex(self.weight)[..., :k]  # [Ci, Co, k]
        out_ft = torch.einsum("bik,iok->bok", x_ft, w)  # [B, Co, k]
        out_ft = F.pad(out_ft, (0, n // 2 + 1 - k))  # zeros above k: [B, Co, N//2+1]
        return torch.fft.irfft(out_ft, n=n, dim=-1)  # [B, Co, N]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes={self.modes}"


class SpectralConv2d(nn.Module):
    """``[B, C_in, N1, N2] -> [B, C_out, N1, N2]``; kept modes: first-axis frequencies 0..m1-1 (``weight1``)
    and -m1..-1 (``weight2``), second-axis frequencies 0..m2-1 (the official code's two corner blocks)."""

    def __init__(self, in_channels: int, out_channels: int, modes1: int, modes2: int | None = None):
        super().__init__()
        modes2 = modes1 if modes2 is None else modes2
        if min(in_channels, out_channels, modes1, modes2) < 1:
            raise ValueError(
                f"SpectralConv2d: channels and modes must be >= 1, got {in_channels}, {out_channels}, "
                f"{modes1}, {modes2}"
            )
        self.in_channels, self.out_channels, self.modes1, self.modes2 = in_channels, out_channels, modes1, modes2
        scale = 1.0 / (in_channels * out_channels)
        self.weight1 = _complex_weight(in_channels, out_channels, modes1, modes2, scale=scale)  # freqs 0..m1-1
        self.weight2 = _complex_weight(in_channels, out_channels, modes1, modes2, scale=scale)  # freqs -m1..-1

    def kept_modes(self, n1: int, n2: int) -> tuple[int, int, int]:
        """(rows of non-negative first-axis frequencies, rows of negative ones, columns) kept on an n1 x n2 grid."""
        neg = min(self.modes1, n1 // 2)
        pos = min(self.modes1, n1 - neg)
        return pos, neg, min(self.modes2, n2 // 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, 2, self.in_channels, "SpectralConv2d")
        n1, n2 = x.shape[-2:]
        pos, neg, k2 = self.kept_modes(n1, n2)
        x_ft = torch.fft.rfft2(x, dim=(-2, -1))  # [B, Ci, N1, N2//2+1]
        out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, n1, n2 // 2 + 1)
        w1 = torch.view_as_complex(self.weight1)[:, :, :pos, :k2]  # [Ci, Co, pos, k2]
        out_ft[:, :, :pos, :k2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, :pos, :k2], w1)
        if neg:
            w2 = torch.view_as_complex(self.weight2)[:, :, self.modes1 - neg :, :k2]  # frequency -f <-> index m1 - f
            out_ft[:, :, n1 - neg :, :k2] = torch.einsum("bixy,ioxy->boxy", x_ft[:, :, n1 - neg :, :k2], w2)
        return torch.fft.irfft2(out_ft, s=(n1, n2), dim=(-2, -1))  # [B, Co, N1, N2]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, modes=({self.modes1}, {self.modes2})"
