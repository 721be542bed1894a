"""H3 — Fu, Dao, Saab, Thomas, Rudra, Ré 2023, "Hungry Hungry Hippos: Towards Language Modeling
with State Space Models" (Section 3.1, Algorithm 1; multi-head form Section 3.1 / Appendix).

For input ``u [L, d]`` (Algorithm 1)::

    Q = u W_Q,  K = u W_K,  V = u W_V                                  (projections, with bias)
    K' = SSM_shift(K)         shift matrix A, B = e_1: a learned causal FIR of length N (=C)
                              plus a skip,  K'_l = sum_{i<N} C_i K_{l-i} + D_k K_l
    per head h (head_dim d_h): KV_l = K'_l V_l^T       [d_h, d_h]
    Y = SSM_diag(KV)          S4D-Lin, zoh, one kernel per head shared by its d_h^2 entries,
                              Y_l = (K * KV)_l + D KV_l
    O_l = Q_l^T Y_l           (sum over the first head index), then the output projection W_O

Defaults as the official code: ``d_state = 64`` for both SSMs, ``head_dim = 1`` (so ``K'V^T`` is
elementwise), S4D-Lin with ``log dt ~ U[log 1e-3, log 1e-1]``, ``C_shift`` Kaiming-uniform,
``D, D_k ~ N(0, 1)``. No activation anywhere (the multiplicative gates are the nonlinearity).

``head_dim``: the cost is O(L d d_h log L) (there are ``d * d_h`` SSM channels), so like the
official code the head size is an option, default 1; ``head_dim=None`` takes the contract's
``num_heads`` instead (``d_h = d_model // num_heads``). With an int ``head_dim``, ``num_heads`` is
unused.

Both SSMs run as FFT convolutions (:mod:`longseq.ssm.fftconv`). The diagonal SSM uses the
FlashConv state passing (Section 4.2): sequences longer than ``block_size`` are cut into blocks,
each an FFT convolution of size ~2*block_size, and the SSM state is carried from block to block
(O(L) memory, FFT size independent of L). The same code continues from a given state, and one
token is the O(d d_h N) recurrent step (state: the last N-1 keys for the shift SSM and the
diagonal state ``[d_h, d_h, H, N/2]``).

Causal only (decision): H3 is built for autoregressive language modelling — the shift SSM
remembers the previous tokens and the diagonal SSM accumulates ``K'V^T`` over the past, which
together implement "find the earlier key, return the value that followed it" (the paper's
associative-recall argument). Running either SSM over the future breaks that construction and
is not in the paper; for bidirectional tasks use ``s4d``/``dss``/``gss``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..ssm.fftconv import diag_ssm_conv, fft_conv, with_skip
from ..ssm.kernels import DiagSSMKernel
from .base import Mixer, register
from .s4d import ssm_conv_flops


def _h3_flops(L, d, h, causal):
    # default head_dim 1: d shift-SSM channels, d diagonal-SSM channels, four projections
    return 2.0 * L * d * d * 4 + ssm_conv_flops(L, d, 32) + ssm_conv_flops(L, d, 0) + 4.0 * L * d


@register(
    "h3",
    family="state space",
    paper="Fu, Dao, Saab, Thomas, Rudra, Ré 2023, Hungry Hungry Hippos: Towards Language Modeling with State Space Models",
    complexity="O(N log N)",
    causal=True,
    bidirectional=False,
    step=True,
    flops=_h3_flops,
)
class H3(Mixer):
    def __init__(self, d_model, *, num_heads=1, causal=False, d_state=64, head_dim=1, block_size=4096,
                 dt_min=1e-3, dt_max=1e-1, lr=1e-3):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        hd = d_model // num_heads if head_dim is None else head_dim
        if not isinstance(hd, int) or hd < 1 or d_model % hd:
            raise ValueError(f"head_dim must be a positive int dividing d_model={d_model} (or None), got {head_dim!r}")
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be a positive int or None, got {block_size!r}")
        self.hd, self.nh, self.block_size = hd, d_model // hd, block_size
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        # shift SSM: x_l = S x_{l-1} + e_1 k_l, y_l = C_shift x_l + D_k k_l  ==  FIR with taps C_shift
        self.shift_C = nn.Parameter(torch.empty(d_model, d_state))
        nn.init.kaiming_uniform_(self.shift_C, a=math.sqrt(5))
        self.shift_D = nn.Parameter(torch.randn(d_model))
        self.kernel = DiagSSMKernel(self.nh, d_state, init="lin", disc="zoh", dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.D = nn.Parameter(torch.randn(self.nh))
        self.out = nn.Linear(d_model, d_model)

    def _shift_ssm(self, k, prev):
        """``k [B, d, L]``, ``prev [B, d, N-1]`` (the keys before this block) -> ``(K', new prev)``."""
        N = self.shift_C.shape[1]
        ext = torch.cat([prev.to(k.dtype), k], dim=-1)                     # [B, d, N-1+L]
        taps = with_skip(self.shift_C, self.shift_D)                       # C_0 + D_k at lag 0
        if k.shape[-1] == 1:                                                # recurrent step
            y = torch.einsum("bdn,dn->bd", ext.flip(-1), taps).unsqueeze(-1)
        else:
            y = fft_conv(ext, taps)[..., N - 1 :]
        return y, ext[..., ext.shape[-1] - (N - 1) :]

    def _forward(self, x, mask, state, return_state):
        B, L, d = x.shape
        q, k, v = (rearrange(p(x), "b l d -> b d l") for p in (self.q_proj, self.k_proj, self.v_proj))
        prev = state["k"] if state is not None else k.new_zeros(B, d, self.shift_C.shape[1] - 1)
        k, prev = self._shift_ssm(k, prev)                                 # [B, d, L]
        kv = (rearrange(k, "b (h i) l -> b i 1 h l", i=self.hd)
              * rearrange(v, "b (h j) l -> b 1 j h l", j=self.hd))         # [B, dh, dh, H, L]
        w, log_z = self.kernel.modes()
        y, xs = diag_ssm_conv(kv, w[0], log_z, None if state is None else state["x"], D=self.D,
                              return_state=return_state, block_size=self.block_size)  # [B, dh, dh, H, L]
        y = (rearrange(q, "b (h i) l -> b i 1 h l", i=self.hd) * y).sum(1)  # [B, dh, H, L]
        y = self.out(rearrange(y, "b j h l -> b l (h j)"))
        return y, ({"k": prev, "x": xs} if return_state else None)

    def _init_state(self, batch_size, device, dtype):
        w, _ = self.kernel.modes()
        return {
            "k": torch.zeros(batch_size, self.d_model, self.shift_C.shape[1] - 1, device=device, dtype=dtype),
            "x": torch.zeros(batch_size, self.hd, self.hd, *w.shape[1:], device=device, dtype=w.dtype),
        }

    def state_size(self, seq_len):
        N = self.shift_C.shape[1]
        return self.d_model * (N - 1) + 2 * self.hd * self.hd * self.nh * (N // 2)
