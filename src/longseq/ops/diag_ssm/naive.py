"""Readable references of the chunked diagonal SSM and FIR of :mod:`.chunk`, unrolled over time.

The diagonal SSM (S4D, Gu et al. 2022, Section 3.2; the state scaling of :mod:`longseq.ssm.kernels`)
``x_l = z x_{l-1} + u_l``, ``y_l = Re sum_n w_n x_{l,n} + D u_l`` from ``x_{-1} = state``, and its
bidirectional form (the S4 repository's ``bidirectional=True``) which adds the strict future
``sum_{m > l} Re sum_n w'_n z_n^{m-l-1} u_m``, a second recurrence run backwards in time. The FIR is
H3's shift SSM (Fu et al. 2023, H3, Section 3.1): ``y_l = sum_{i < n} k_i u_{l-i}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["diag_ssm_naive", "fir_conv_naive"]


def diag_ssm_naive(
    u: torch.Tensor,
    w: torch.Tensor,
    log_z: torch.Tensor,
    *,
    w_back: torch.Tensor | None = None,
    D: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
):
    """``u [..., H, L]`` real, ``w, log_z, w_back [H, N]`` complex, ``D [H]``, ``state [..., H, N]``
    -> ``(y [..., H, L], x_{L-1} [..., H, N])``, one Python loop over time."""
    L = u.shape[-1]
    x = torch.zeros(*u.shape[:-1], w.shape[-1], dtype=w.dtype, device=u.device) if state is None else state
    ys = []
    for t in range(L):
        x = torch.exp(log_z) * x + u[..., t, None]  # [..., H, N]
        ys.append((w * x).real.sum(-1))
    y = torch.stack(ys, -1)  # [..., H, L]
    if w_back is not None:  # the strict future, backwards in time
        xb, yb = torch.zeros_like(x), []
        for t in range(L - 1, -1, -1):
            yb.append((w_back * xb).real.sum(-1))
            xb = torch.exp(log_z) * xb + u[..., t, None]
        y = y + torch.stack(yb[::-1], -1)
    if D is not None:
        y = y + D[:, None] * u
    return y, x


def fir_conv_naive(u: torch.Tensor, k: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """``y_l = sum_{i < n} k_i u_{l-i}``: ``u [..., H, L]``, ``k [H, n]``, ``prev [..., H, n-1]`` (the inputs
    before ``u``; zeros if None) -> ``[..., H, L]``, one window sum per position."""
    n = k.shape[-1]
    ext = F.pad(u, (n - 1, 0)) if prev is None else torch.cat([prev.to(u.dtype), u], -1)  # [..., H, n-1+L]
    return torch.stack([(ext[..., t : t + n].flip(-1) * k).sum(-1) for t in range(u.shape[-1])], -1)
