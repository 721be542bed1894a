"""Readable reference of H3's training path (Fu et al. 2023, "Hungry Hungry Hippos", Algorithm 1):

    Q, K, V = x W_Q^T + b_Q, x W_K^T + b_K, x W_V^T + b_V                     [B, L, d] each
    K' = SSM_shift(K)        the causal FIR y_l = sum_i taps_i K_{l-i} (shift SSM + skip)
    per head h (d_h = head_dim channels):  Y_h = SSM_diag(K'_h V_h^T)  [B, L, d_h, d_h]
    O_h = Q_h Y_h,           out = O W_o^T + b_o

built from the unrolled references of :mod:`longseq.ops.diag_ssm.naive` (the diagonal SSM in the
scaling of :mod:`longseq.ssm.kernels`, ``x_l = z x_{l-1} + u_l``, ``y_l = Re sum w x_l + D u_l``).
"""

from __future__ import annotations

import torch
from einops import rearrange

from ..diag_ssm.naive import diag_ssm_naive, fir_conv_naive

__all__ = ["h3_core_naive"]


def h3_core_naive(
    x: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    taps: torch.Tensor,
    w: torch.Tensor,
    log_z: torch.Tensor,
    D: torch.Tensor,
    Wo: torch.Tensor,
    bo: torch.Tensor,
    head_dim: int,
) -> torch.Tensor:
    """The arguments of :func:`.fused.h3_core` (no chunk length): ``x [B, L, d]`` -> ``[B, L, d]``."""
    d, hd = x.shape[-1], head_dim
    q, k, v = (rearrange(t, "b l d -> b d l") for t in (x @ W.T + b).split(d, -1))  # [B, d, L] each
    kp = fir_conv_naive(k, taps)  # K' [B, d, L]
    kv = rearrange(kp, "b (h i) l -> b i 1 h l", i=hd) * rearrange(v, "b (h j) l -> b 1 j h l", j=hd)
    y, _ = diag_ssm_naive(kv, w, log_z, D=D)  # [B, dh, dh, H, L]
    o = (rearrange(q, "b (h i) l -> b i 1 h l", i=hd) * y).sum(1)  # [B, dh, H, L]
    return rearrange(o, "b j h l -> b l (h j)") @ Wo.T + bo
