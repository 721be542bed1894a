"""Readable reference of the position-wise SSM block outputs of :mod:`.fused`: ``z = linear(GELU(y))``
then the head — as is (S4D block), its GLU (S4 block, ``glu=True``), or a sigmoid gate on
``GELU(y)`` / on ``y`` (S5's ``half_glu1`` / ``half_glu2``, Smith et al. 2023, official
``SequenceLayer``) — composed from torch functions and differentiated by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["gelu_linear_naive"]


def gelu_linear_naive(
    y: torch.Tensor, linear: nn.Linear, *, glu: bool = False, gate: str | None = None
) -> torch.Tensor:
    """``y [..., d]`` -> ``[..., d_out]``; the same arguments as :func:`.fused.gelu_linear` (no row blocks)."""
    h = F.gelu(y)
    z = F.linear(h, linear.weight.to(y.dtype), None if linear.bias is None else linear.bias.to(y.dtype))
    if gate is not None:
        return (h if gate == "output" else y) * torch.sigmoid(z)
    return F.glu(z, dim=-1) if glu else z
