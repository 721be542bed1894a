"""GSS — Mehta, Gupta, Cutkosky, Neyshabur 2023, "Long Range Language Modeling via Gated State
Spaces" (Section 3, Figure 1 pseudo-code).

GAU-style gating around a DSS kernel with a dimension reduction (E = d_model)::

    V   = GELU(x W_v)         [L, F],  F = expand * E        (expand = 4: the paper's E=1024, F=4096)
    U   = GELU(x W_u)         [L, H],  H = d_ssm  (default E / 4: the paper's H = 256 for E = 1024)
    Y   = DSS(U)              [L, H]   DSS_exp kernel, no activation (+ D U skip)
    U_c = Y W_c               [L, F]
    out = (U_c * V) W_o       [L, E]

The SSM runs on the reduced H channels, which is what makes GSS faster than DSS at equal width.

Decisions on ambiguous points:
* The paper's layer also holds the pre-LayerNorm and the residual; here the block builder owns
  both (as for every mixer), so the mixer is the map above. GSS stacks these layers without a
  separate feed-forward (the F = 4E gated branch is its FFN, as in GAU), hence ``has_ffn=True``.
* DSS kernel (:class:`longseq.ssm.kernels.DSSKernel`, variant ``exp``): ``d_state = 512`` complex
  modes as in the paper, skew-HiPPO init, learned per-channel Δ with log Δ ~ U[log 1e-3, log 1e-1]
  (the DSS recipe). Some descriptions of GSS fix Δ = 1 with random Λ (not verified against the
  paper here); a learned Δ includes that setting and keeps long memory at initialisation.
* Bidirectional mode: the DSS kernel gets a second channel over the strict future (as in
  ``s4d``). U is zeroed at padded positions (GELU(bias) is not zero) so right padding never
  reaches real positions through the backward kernel.
* Recurrent ``step``: the diagonal DSS recurrence on the H channels (state ``[H, N]`` complex).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ssm.fftconv import ssm_apply
from ..ssm.kernels import DSSKernel
from .base import Mixer, register
from .s4d import ssm_conv_flops


def _gss_flops(L, d, h, causal):
    Fdim, H = 4 * d, max(1, d // 4)
    return 2.0 * L * (d * Fdim + d * H + H * Fdim + Fdim * d) + ssm_conv_flops(L, H * (1 if causal else 2), 512)


@register(
    "gss",
    family="state space",
    paper="Mehta, Gupta, Cutkosky, Neyshabur 2023, Long Range Language Modeling via Gated State Spaces",
    complexity="O(N log N)",
    causal=True,
    bidirectional=True,
    step=True,
    has_ffn=True,
    flops=_gss_flops,
)
class GSS(Mixer):
    def __init__(self, d_model, *, num_heads=1, causal=False, expand=4, d_ssm=None, d_state=512,
                 dt_min=1e-3, dt_max=1e-1, lr=1e-3):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        H = max(1, d_model // 4) if d_ssm is None else d_ssm
        if not isinstance(H, int) or H < 1:
            raise ValueError(f"d_ssm must be a positive int or None (d_model // 4), got {d_ssm!r}")
        if not isinstance(expand, int) or expand < 1:
            raise ValueError(f"expand must be a positive int, got {expand!r}")
        Fdim = expand * d_model
        self.v_proj = nn.Linear(d_model, Fdim)
        self.u_proj = nn.Linear(d_model, H)
        self.kernel = DSSKernel(H, d_state, channels=1 if causal else 2, variant="exp",
                                dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.D = nn.Parameter(torch.randn(H))
        self.c_proj = nn.Linear(H, Fdim)
        self.out = nn.Linear(Fdim, d_model)

    def _forward(self, x, mask, state, return_state):
        v = F.gelu(self.v_proj(x))                                          # [B, L, F]
        u = F.gelu(self.u_proj(x))                                          # [B, L, H]
        if mask is not None:
            u = u * mask.unsqueeze(-1).to(u.dtype)
        y, state = ssm_apply(self.kernel, u.transpose(1, 2), self.D, self.causal,
                             None if state is None else state["x"], return_state=return_state)
        y = self.out(self.c_proj(y.transpose(1, 2)) * v)
        return y, ({"x": state} if return_state else None)

    def _init_state(self, batch_size, device, dtype):
        w, _ = self.kernel.modes()
        return {"x": torch.zeros(batch_size, *w.shape[1:], dtype=w.dtype, device=device)}

    def state_size(self, seq_len):
        return 2 * self.kernel.W.shape[1] * self.kernel.W.shape[2]
