"""Readable reference of GSS's gated output branch (Mehta et al. 2023, Gated State Spaces, Fig. 1):
``out = ((Y W_c^T + b_c) ⊙ GELU(X W_v^T + b_v)) W_o^T + b_o``, all ``[R, F]`` tensors materialised
and differentiated by autograd."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gated_out_naive"]


def gated_out_naive(
    x: torch.Tensor,
    y1: torch.Tensor,
    Wv: torch.Tensor,
    bv: torch.Tensor,
    Wc1: torch.Tensor,
    Wo: torch.Tensor,
    bo: torch.Tensor,
) -> torch.Tensor:
    """The arguments of :func:`.fused.gated_out`: ``x [R, E]``, ``y1 = [y, 1] [R, H + 1]``, ``W_c1 = [W_c, b_c]``."""
    V = F.gelu(x @ Wv.T + bv)  # [R, F]
    Uc = y1 @ Wc1.T  # [R, F]
    return (Uc * V) @ Wo.T + bo  # [R, d]
