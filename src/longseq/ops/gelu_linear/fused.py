"""Memory-light position-wise output layers of the SSM blocks: ``linear(GELU(y))``, optionally
followed by a GLU (the S4 / S4D block outputs), or used as a sigmoid gate (S5's ``half_glu``).

At long lengths the position-wise part, not the SSM, holds most of a layer's activations:
autograd keeps GELU's input and output ``[R, d]`` and the linear output ``[R, d_out]`` (with a GLU,
four ``[R, d]`` tensors per layer: 67 MB at R = 16K rows, d = 256). :func:`gelu_linear` keeps
only its input ``y`` and works in blocks of ``rows`` rows, recomputing GELU in the backward (and,
when a GLU or a gate needs the linear output, the linear map: one extra matmul).

Heads on ``z = GELU(y) W^T + b`` (``h = GELU(y)``, ``s = sigmoid``)::

    "linear":      out = z
    "glu":         out = a s(c),       (a, c) = z split in halves
    "gate_output": out = h s(z)        (S5 half_glu1)
    "gate_input":  out = y s(z)        (S5 half_glu2)

Backward per block: ``dz`` from the head; ``dW = dz^T h``, ``db = sum dz``, ``dh = dz W``;
``dy = GELU'(y) (dh + dm)`` for ``gate_output`` and ``GELU'(y) dh + dm`` for ``gate_input``, with
``dm = dout s(z)`` the gradient through the gated factor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["gelu_linear"]


class _GeluLinear(torch.autograd.Function):
    """The heads of the module docstring for ``y [R, d]``, in row blocks, keeping only ``y``."""

    @staticmethod
    def forward(ctx, y, weight, bias, rows, head):
        d_out = weight.shape[0] // 2 if head == "glu" else weight.shape[0]
        out = y.new_empty(y.shape[0], d_out)
        for r in range(0, y.shape[0], rows):
            yr = y[r : r + rows]
            h = F.gelu(yr)
            z = F.linear(h, weight, bias)  # [rows, d_out (x2)]
            if head == "linear":
                out[r : r + rows] = z
            elif head == "glu":
                out[r : r + rows] = F.glu(z, dim=-1)
            else:
                torch.mul(h if head == "gate_output" else yr, torch.sigmoid(z), out=out[r : r + rows])
        ctx.save_for_backward(y, weight, bias)
        ctx.rows, ctx.head = rows, head
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        y, weight, bias = ctx.saved_tensors
        head = ctx.head
        dy = torch.empty_like(y) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for r in range(0, y.shape[0], ctx.rows):
            yr, dz = y[r : r + ctx.rows], g[r : r + ctx.rows]
            h = F.gelu(yr)
            dm = None
            if head == "glu":  # d GLU / d (a, gate)
                a, gate = F.linear(h, weight, bias).chunk(2, dim=-1)
                s = torch.sigmoid(gate)
                dz = torch.cat([dz * s, dz * a * s * (1 - s)], dim=-1)
            elif head != "linear":  # d (m s(z)) / d (m, z)
                s = torch.sigmoid(F.linear(h, weight, bias))
                m = h if head == "gate_output" else yr
                dz, dm = dz * m * s * (1 - s), dz * s
            if dw is not None:
                dw.addmm_(dz.t(), h)
            if dy is not None:
                dh = dz @ weight
                if head == "gate_output":
                    dy[r : r + ctx.rows] = torch.ops.aten.gelu_backward(dh.add_(dm), yr)
                elif head == "gate_input":
                    dy[r : r + ctx.rows] = torch.ops.aten.gelu_backward(dh, yr).add_(dm)
                else:
                    dy[r : r + ctx.rows] = torch.ops.aten.gelu_backward(dh, yr)
            if r == 0:
                db = dz.sum(0)
            else:
                db += dz.sum(0)
        return dy, dw, (db if ctx.needs_input_grad[2] else None), None, None


def gelu_linear(
    y: torch.Tensor, linear: nn.Linear, *, glu: bool = False, gate: str | None = None, rows: int | None = None
) -> torch.Tensor:
    """``linear(GELU(y))`` for ``y [..., d]``, keeping only ``y`` for the backward: its ``GLU`` with
    ``glu=True``, or ``GELU(y) * sigmoid(.)`` / ``y * sigmoid(.)`` with ``gate="output"`` /
    ``gate="input"`` (see the module docstring). ``rows``: block size (default: blocks of ~8 MB
    of linear output). The weights are cast to ``y``'s dtype."""
    if gate not in (None, "output", "input"):
        raise ValueError(f"gelu_linear: gate must be None, 'output' or 'input', got {gate!r}")
    if glu and gate is not None:
        raise ValueError("gelu_linear: glu=True and a gate are exclusive")
    head = "glu" if glu else ("linear" if gate is None else f"gate_{gate}")
    y2 = y.reshape(-1, y.shape[-1]).contiguous()  # [R, d]
    rows = rows or max(256, (1 << 21) // linear.weight.shape[0])
    bias = None if linear.bias is None else linear.bias.to(y.dtype)
    out = _GeluLinear.apply(y2, linear.weight.to(y.dtype), bias, rows, head)
    return out.view(*y.shape[:-1], out.shape[-1])
