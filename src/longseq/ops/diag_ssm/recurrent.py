"""One step of the diagonal SSM (S4D, Gu et al. 2022, Section 3.2, eq. (5) in the state scaling of
:mod:`longseq.ssm.kernels`): ``x_l = z x_{l-1} + u_l``, ``y_l = Re sum_n w_n x_{l,n}``."""

from __future__ import annotations

import torch

__all__ = ["diag_step"]


def _exp(log_z: torch.Tensor) -> torch.Tensor:
    """``z = exp(log_z)``; without autograd, kept on ``log_z`` itself while it is unmodified.

    The kernels cache ``log_z`` while decoding (:func:`longseq.ssm.kernels._no_grad_cached`), so
    the same tensor comes back every token and its complex ``exp`` need not be recomputed.
    """
    if torch.is_grad_enabled():
        return torch.exp(log_z)
    hit = getattr(log_z, "_exp_cache", None)
    if hit is not None and hit[0] == log_z._version:
        return hit[1]
    z = torch.exp(log_z)
    log_z._exp_cache = (log_z._version, z)
    return z


def diag_step(u_t: torch.Tensor, w: torch.Tensor, log_z: torch.Tensor, x: torch.Tensor):
    """One step: ``u_t [..., H]``, state ``x [..., H, N]`` -> ``(y_t [..., H], x)``."""
    x = _exp(log_z) * x + u_t.unsqueeze(-1)  # [..., H, N]
    return (w * x).real.sum(-1), x
