"""One step of the diagonal SSM (S4D, Gu et al. 2022, Section 3.2, eq. (5) in the state scaling of
:mod:`longseq.ssm.kernels`): ``x_l = z x_{l-1} + u_l``, ``y_l = Re sum_n w_n x_{l,n}``."""

from __future__ import annotations

import torch

__all__ = ["diag_step"]


def diag_step(u_t: torch.Tensor, w: torch.Tensor, log_z: torch.Tensor, x: torch.Tensor):
    """One step: ``u_t [..., H]``, state ``x [..., H, N]`` -> ``(y_t [..., H], x)``."""
    x = torch.exp(log_z) * x + u_t.unsqueeze(-1)
    return (w * x).real.sum(-1), x
