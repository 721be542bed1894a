"""Memory-light position-wise output layers of the SSM blocks: ``linear(GELU(y))``, optionally
followed by a GLU (the S4 / S4D block outputs).

At long lengths the position-wise part, not the SSM, holds most of a layer's activations:
autograd keeps GELU's input and output ``[R, d]`` and the linear output ``[R, d_out]`` (with a GLU,
four ``[R, d]`` tensors per layer: 67 MB at R = 16K rows, d = 256). :func:`gelu_linear` keeps
only its input ``y`` and works in blocks of ``rows`` rows, recomputing GELU in the backward (and,
with ``glu=True``, the linear map, whose output the GLU's backward needs: one extra matmul).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["gelu_linear"]


class _GeluLinear(torch.autograd.Function):
    """``z = GELU(y) W^T + b`` (then ``GLU(z)`` if ``glu``) for ``y [R, d]``, in row blocks."""

    @staticmethod
    def forward(ctx, y, weight, bias, rows, glu):
        d_out = weight.shape[0] // 2 if glu else weight.shape[0]
        out = y.new_empty(y.shape[0], d_out)
        for r in range(0, y.shape[0], rows):
            z = F.linear(F.gelu(y[r : r + rows]), weight, bias)                 # [rows, d_out (x2)]
            out[r : r + rows] = F.glu(z, dim=-1) if glu else z
        ctx.save_for_backward(y, weight, bias)
        ctx.rows, ctx.glu = rows, glu
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, weight, bias = ctx.saved_tensors
        dy = torch.empty_like(y) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for r in range(0, y.shape[0], ctx.rows):
            yr, dz = y[r : r + ctx.rows], g[r : r + ctx.rows]
            h = F.gelu(yr)
            if ctx.glu:                                                         # d GLU / d (a, gate)
                a, gate = F.linear(h, weight, bias).chunk(2, dim=-1)
                s = torch.sigmoid(gate)
                dz = torch.cat([dz * s, dz * a * s * (1 - s)], dim=-1)
            if dw is not None:
                dw.addmm_(dz.t(), h)
            if dy is not None:
                dy[r : r + ctx.rows] = torch.ops.aten.gelu_backward(dz @ weight, yr)
            if r == 0:
                db = dz.sum(0)
            else:
                db += dz.sum(0)
        return dy, dw, (db if ctx.needs_input_grad[2] else None), None, None


def gelu_linear(y: torch.Tensor, linear: nn.Linear, *, glu: bool = False, rows: int | None = None) -> torch.Tensor:
    """``linear(GELU(y))`` (``GLU`` of it with ``glu=True``) for ``y [..., d]``, keeping only ``y``
    for the backward. ``rows``: block size (default: blocks of ~8 MB of linear output)."""
    y2 = y.reshape(-1, y.shape[-1]).contiguous()                               # [R, d]
    rows = rows or max(256, (1 << 21) // linear.weight.shape[0])
    out = _GeluLinear.apply(y2, linear.weight, linear.bias, rows, glu)
    return out.view(*y.shape[:-1], out.shape[-1])
