"""``fno``: the Fourier layer of the Fourier neural operator as a token mixer.

Li, Kovachki, Azizzadenesheli et al., "Fourier Neural Operator for Parametric Partial Differential
Equations" (ICLR 2021), eq. (4)-(5): (K v)(x) = F^{-1}(R . F v)(x), R a learned complex weight per
kept Fourier mode and channel pair, the modes above ``modes`` dropped. Here the sequence
``[B, L, d_model]`` is the function v, sampled at L points of the unit interval, with the
d_model features as channels; the layer is global (every token sees every other) and
bidirectional, O(L log L) by the FFT (:class:`longseq.operators.SpectralConv1d` is the same
operator on channels-first fields).

Decisions (the paper's layer is for PDE fields, not token sequences):
* ``num_heads`` splits the channels into blocks with their own d_head x d_head weight per mode
  (block-diagonal R, as AFNO, Guibas et al. 2021, does for tokens); ``num_heads=1`` is the paper's
  dense R. Parameters: d_model * d_head * modes complex numbers.
* the FNO layer's pointwise W v and activation are the transformer block's residual and
  feed-forward around the mixer, so the mixer is K alone (no extra projection).
* the sequence is periodic, as the FFT makes it (the FNO's 1D Burgers setting; no padding).
* init as the official code: real and imaginary parts uniform on [0, 1/(d_head^2)).
* padding: a right-padded sequence of real length l is the function sampled at its own l points, so
  each distinct length in the batch gets its own FFT of length l (the output at real positions is
  that of the sequence alone, as the conformance suite requires; the padded tail is zero). Masks
  must therefore be prefixes (right padding); anything else is a ValueError.
* ``dropout`` is applied to the output during training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import Mixer, register


def fno_flops(L: int, d: int, h: int, causal: bool, modes: int = 16) -> float:
    fft = 2 * 5 * L * max(1.0, math.log2(max(L, 2))) * d / 2  # rfft + irfft over d channels
    mix = 8 * min(modes, L // 2 + 1) * d * (d // max(h, 1))  # complex multiply-adds per kept mode
    return float(fft + mix)


@register(
    "fno",
    family="spectral (neural operator)",
    paper="Li, Kovachki et al. 2021, Fourier Neural Operator for Parametric PDEs",
    complexity="O(N log N)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=fno_flops,
)
class FNOMixer(Mixer):
    """Fourier layer along the sequence: y = irfft(R_k . rfft(x)_k, k < modes)."""

    def __init__(self, d_model, *, num_heads=1, causal=False, modes=16, dropout=0.0):
        if causal:
            raise ValueError("fno is bidirectional only (the FFT mixes all positions): build it with causal=False")
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not isinstance(modes, int) or modes < 1:
            raise ValueError(f"fno: modes must be a positive int, got {modes!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"fno: dropout must be in [0, 1), got {dropout}")
        self.modes, self.dropout = modes, float(dropout)
        dh = self.head_dim
        self.weight = nn.Parameter(torch.rand(num_heads, dh, dh, modes, 2) / (dh * dh))  # [H, Dh_in, Dh_out, m, re/im]

    def _spectral(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        k = min(self.modes, L // 2 + 1)
        xh = x.view(B, L, self.num_heads, self.head_dim)  # [B, L, H, Dh]
        x_ft = torch.fft.rfft(xh, dim=1)[:, :k]  # [B, k, H, Dh]
        w = torch.view_as_complex(self.weight)[..., :k]  # [H, Dh, Dh, k]
        y_ft = torch.einsum("bkhi,hiok->bkho", x_ft, w)  # [B, k, H, Dh]
        y_ft = F.pad(y_ft, (0, 0, 0, 0, 0, L // 2 + 1 - k))  # [B, L//2+1, H, Dh]
        return torch.fft.irfft(y_ft, n=L, dim=1).reshape(B, L, self.d_model)

    def _forward(self, x, mask, state, return_state):
        L = x.shape[1]
        if mask is None:
            y = self._spectral(x)
        else:
            lengths = mask.sum(1)  # [B]
            if not torch.equal(mask, torch.arange(L, device=mask.device)[None, :] < lengths[:, None]):
                raise ValueError(
                    "fno: the mask must mark a prefix of each sequence (right padding), "
                    "since each sequence is the function sampled at its own real positions"
                )
            outs, order = [], []
            for l in torch.unique(lengths).tolist():  # one FFT length per distinct real length
                idx = torch.nonzero(lengths == l).squeeze(1)
                part = self._spectral(x[idx, :l]) if l > 0 else x.new_zeros(len(idx), 0, self.d_model)
                outs.append(F.pad(part, (0, 0, 0, L - l)))
                order.append(idx)
            y = torch.cat(outs)[torch.argsort(torch.cat(order))]
        return F.dropout(y, self.dropout, self.training), None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, modes={self.modes}"
