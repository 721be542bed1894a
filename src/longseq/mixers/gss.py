"""GSS — Mehta, Gupta, Cutkosky, Neyshabur 2023, "Long Range Language Modeling via Gated State
Spaces" (arXiv 2206.13947, Section 3 and its Figure 1 pseudo-code).

GAU-style gating around a simplified DSS kernel with a dimension reduction (E = d_model)::

    V   = GELU(x W_v)         [L, F],  F = expand * E        (expand = 4: the paper's E=1024, F=4096)
    U   = GELU(x W_u)         [L, H],  H = d_ssm  (default E / 4: the paper's H = 256 for E = 1024)
    Y   = DSS(U)              [L, H]   simplified DSS_exp kernel, no activation (+ D U skip)
    U_c = Y W_c               [L, F]
    out = (U_c * V) W_o       [L, E]

The SSM runs on the reduced H channels, which is what makes GSS faster than DSS at equal width.

The simplified DSS of the GSS pseudo-code (``variant="gss"``, the default): ONE set of
``N = d_state = 512`` complex modes shared by all H channels, Δ fixed to 1::

    Λ = -exp(Λ_re) + i exp(Λ_im) ∈ C^N,   Λ_re, Λ_im ~ N(0, 1)       (random, not HiPPO)
    K[h, l] = Re Σ_n C[h, n] (e^{Λ_n} - 1) / Λ_n · e^{Λ_n l},   C ∈ C^{H×N}, Re C, Im C ~ N(0, 1)
    Y = K * U + D ⊙ U                                               (causal convolution)

i.e. the diagonal recurrence ``x_l = e^Λ x_{l-1} + U_l``, ``Y_l = Re Σ_n w_{h,n} x_{l,n} + D U_l``
with ``w = C (e^Λ - 1)/Λ`` (ZOH with B = 1, Δ = 1).

Speed and memory at long L (the SSM pieces are the shared ones of :mod:`longseq.ssm` and :mod:`longseq.ops`):

* Kernel: :class:`longseq.ssm.kernels.SharedDSSKernel` through
  :func:`longseq.ops.vandermonde.chunk.vandermonde` with modes shared by every channel — one real
  matmul ``[C·H·J, 2N] @ [2N, T]`` over powers ``z^t``, ``T ~ sqrt(C·H·L)``; chunks in which a
  mode has decayed below ``e^-70`` are skipped (at the random init the 16K kernel costs about one
  chunk; modes that learn long memory are kept); the backward saves only ``w`` and ``Λ``.
* Convolution: :func:`longseq.ops.fftconv.fft.kernel_conv`, eq. (1)/(2) there, O(L log L), a few
  channels at a time, recomputing the spectra in the backward.
* Gated branch (:func:`longseq.ops.gss_gate.gated_out`). Autograd would keep ``x W_v``, ``V``, ``U_c`` and ``U_c ⊙ V``
  (four ``[L, F]`` tensors, 64 MB each at L = 16K, F = 1024) plus ``[L, F]`` gradients. Here it
  runs in sequence chunks and saves only its inputs; the backward recomputes ``x W_v + b_v`` (one
  more ``[L, E] @ [E, F]`` matmul, a small share of the layer's time), ``V`` (elementwise) and
  ``U_c = Y W_c`` (an ``[L, H + 1] @ [H + 1, F]`` matmul, cheap since H = E/4).

Decisions on ambiguous points:
* Kernel: ``variant="gss"`` follows the paper's simplified DSS as read in the reference notes
  (../shared/reference/methods.md §15: shared Λ, random N(0, 1) init, Δ = 1, C ∈ C^{H×N}; the
  third-party lucidrains/gated-state-spaces-pytorch reading agrees). The paper's full text was
  not retrievable with our search tools, so the exact wording of Section 3 is not verified here.
  ``variant="dss"`` keeps the previous per-channel DSS_exp kernel
  (:class:`longseq.ssm.kernels.DSSKernel`: skew-HiPPO Λ per channel, learned Δ with log Δ ~
  U[log dt_min, log dt_max]) — what this mixer used before; ``dt_min``/``dt_max`` only apply to it.
* Λ (and Δ for ``variant="dss"``) get learning rate ``ssm_lr`` and no weight decay (the DSS recipe; the
  GSS paper's optimiser settings for Λ are not verified here; ``ssm_lr=None`` keeps the global rate).
  C and D are ordinary weights.
* The paper's layer also holds the pre-LayerNorm and the residual; here the block builder owns
  both (as for every mixer), so the mixer is the map above. GSS stacks these layers without a
  separate feed-forward (the F = 4E gated branch is its FFN, as in GAU), hence ``has_ffn=True``.
  The lucidrains reading adds a LayerNorm inside DSS and drops the projection biases; neither is
  in the reference notes' equations, so neither is done here (the projections keep their biases).
* Bidirectional mode (not in the paper, a language-model layer): a second set of C over the
  strict future, as in ``s4d`` (eq. (2) of :mod:`longseq.ops.fftconv.fft`). U is zeroed at padded
  positions (GELU(bias) is not zero) so right padding never reaches real positions through the
  backward kernel.
* Recurrent ``step``: the diagonal recurrence above on the H channels (state ``[H, N]`` complex).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.fftconv import fast_fft_size, kernel_conv, ssm_apply
from ..ops.gss_gate import gated_out
from ..ops.vandermonde import vandermonde, vandermonde_transposed
from ..ssm.kernels import DSSKernel, SharedDSSKernel
from ..utils.validate import check_choice, check_int
from .base import Mixer, register

KERNELS = ("gss", "dss")


# ---------------------------------------------------------------------------- mixer
def _gss_flops(L, d, h, causal):
    Fdim, H, N, C = 4 * d, max(1, d // 4), 512, 1 if causal else 2
    n = fast_fft_size(2 * L)
    ssm = 4.0 * C * H * N * L + H * (3 * 2.5 * n * math.log2(n) + 6.0 * n)  # kernel matmul + FFT conv
    return 2.0 * L * (d * Fdim + d * H + H * Fdim + Fdim * d) + ssm


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
    heads=False,
    renamed={"lr": "ssm_lr", "kernel": "variant"},
)
class GSS(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        expand: float = 4,
        d_ssm: int | None = None,
        d_state: int = 512,
        variant: str = "gss",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float | None = 1e-3,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        H = (
            max(1, d_model // 4)
            if d_ssm is None
            else check_int("d_ssm (None: d_model // 4)", d_ssm, min=1, owner="gss")
        )
        check_int("expand", expand, min=1, owner="gss")
        check_int("d_state", d_state, min=1, owner="gss")
        check_choice("variant", variant, KERNELS, owner="gss")
        Fdim, C = expand * d_model, 1 if causal else 2
        self.v_proj = nn.Linear(d_model, Fdim)
        self.u_proj = nn.Linear(d_model, H)
        if variant == "gss":
            self.kernel = SharedDSSKernel(H, d_state, channels=C, lr=ssm_lr)
        else:
            self.kernel = DSSKernel(H, d_state, channels=C, variant="exp", dt_min=dt_min, dt_max=dt_max, lr=ssm_lr)
        self.D = nn.Parameter(torch.randn(H))
        self.c_proj = nn.Linear(H, Fdim)
        self.out = nn.Linear(Fdim, d_model)

    def _ssm(self, u, state, return_state):
        """``u [B, H, L]`` -> ``(SSM(u) + D u [B, H, L], new state or None)``."""
        if isinstance(self.kernel, DSSKernel):
            return ssm_apply(self.kernel, u, self.D, self.causal, state, return_state=return_state)
        w, log_z = self.kernel.modes()  # [C, H, N], [N]
        L, D = u.shape[-1], self.D.to(w.real.dtype)
        if L == 1 and state is not None:  # the recurrent step
            x = torch.exp(log_z) * state + u.to(w.real.dtype)  # [B, H, N]
            return ((w[0] * x).real.sum(-1, keepdim=True) + D[:, None] * u).to(u.dtype), x
        k = vandermonde(w, log_z, L)  # [C, H, L]
        y = kernel_conv(u, k, D)
        if state is not None:  # + Re Σ w z^{l+1} x_{-1}
            y = y + vandermonde(w[0] * torch.exp(log_z) * state, log_z, L).to(y.dtype)
        if not return_state:
            return y, None
        x = vandermonde_transposed(u, log_z)  # [B, H, N]
        if state is not None:
            x = x + torch.exp(log_z * L) * state
        return y, x

    def _forward(self, x, mask, state, return_state):
        u = F.gelu(self.u_proj(x))  # [B, L, H]
        if mask is not None:
            u = u * mask.unsqueeze(-1).to(u.dtype)
        y, state = self._ssm(u.transpose(1, 2), None if state is None else state["x"], return_state)
        y1 = F.pad(y.transpose(1, 2), (0, 1), value=1.0).reshape(-1, y.shape[1] + 1)  # [B L, H + 1]
        Wc1 = torch.cat([self.c_proj.weight, self.c_proj.bias.unsqueeze(-1)], dim=-1)  # [F, H + 1]
        args = (
            x.reshape(-1, x.shape[-1]),
            y1,
            self.v_proj.weight,
            self.v_proj.bias,
            Wc1,
            self.out.weight,
            self.out.bias,
        )
        out = gated_out(*args)
        return out.view_as(x), ({"x": state} if return_state else None)

    def _init_state(self, batch_size, device, dtype):
        w, _ = self.kernel.modes()
        return {"x": torch.zeros(batch_size, *w.shape[1:], dtype=w.dtype, device=device)}

    def state_size(self, seq_len):
        w, _ = self.kernel.modes()
        return 2 * w.shape[1] * w.shape[2]
