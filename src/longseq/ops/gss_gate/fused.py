"""GSS's gated output branch in row chunks, keeping only its inputs (the fast twin of :mod:`.naive`).

Mehta, Gupta, Cutkosky, Neyshabur 2023, "Long Range Language Modeling via Gated State Spaces",
Fig. 1 / Section 3 (GSS layer pseudocode): ``V = GELU(X W_v)``, ``U_c = Y W_c`` (``Y`` the SSM
output), ``out = (U_c ⊙ V) W_o``; the biases of the official code's dense layers included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gated_out"]


def gated_out(
    x: torch.Tensor,
    y1: torch.Tensor,
    Wv: torch.Tensor,
    bv: torch.Tensor,
    Wc1: torch.Tensor,
    Wo: torch.Tensor,
    bo: torch.Tensor,
) -> torch.Tensor:
    """``out [R, d] = (y1 W_c1^T ⊙ GELU(x W_v^T + b_v)) W_o^T + b_o`` for ``x [R, E]``, ``y1 = [y, 1] [R, H + 1]``,
    ``W_c1 = [W_c, b_c] [F, H + 1]``: the autograd function when a gradient is needed, else the same
    chunked forward without saving anything."""
    args = (x, y1, Wv, bv, Wc1, Wo, bo)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args):
        return _GatedOut.apply(*args)
    return _gated_forward(*args)


def _chunk_rows(F_dim: int) -> int:
    return max(1, (1 << 20) // F_dim)  # ~1M elements (4 MB float32) per [rows, F] buffer


class _GatedOut(torch.autograd.Function):
    """``out = (y1 W_c1^T ⊙ GELU(x W_v^T + b_v)) W_o^T + b_o`` over rows, in chunks.

    ``x [R, E]``; ``y1 = [y, 1]`` ``[R, H + 1]`` and ``W_c1 = [W_c, b_c]`` (the bias of ``U_c``
    folded into its matmul). Saves only the inputs: the backward recomputes ``a = x W_v^T + b_v``,
    ``V = GELU(a)`` and ``U_c`` per chunk into a few reused ``[chunk, F]`` buffers, so no ``[R, F]``
    tensor ever lives. Keeping ``a`` instead (64 MB at R = 16K, F = 1024) saved one of the seven
    ``[chunk, E] x [E, F]``-sized matmuls but put the layer above SDPA's memory at 16K.
    """

    @staticmethod
    def forward(ctx, x, y1, Wv, bv, Wc1, Wo, bo):
        ctx.save_for_backward(x, y1, Wv, bv, Wc1, Wo)
        return _gated_forward(x, y1, Wv, bv, Wc1, Wo, bo)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, y1, Wv, bv, Wc1, Wo = ctx.saved_tensors
        g = g.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dy1 = torch.empty_like(y1) if ctx.needs_input_grad[1] else None
        dWv, dWc1, dWo = torch.zeros_like(Wv), torch.zeros_like(Wc1), torch.zeros_like(Wo)
        dbv = Wv.new_zeros(Wv.shape[0])
        c = _chunk_rows(Wv.shape[0])
        bufs = x.new_empty(5, min(c, x.shape[0]), Wv.shape[0])
        for s in range(0, x.shape[0], c):
            g_c, x_c, y_c = g[s : s + c], x[s : s + c], y1[s : s + c]
            a_c, v, uc, dp, t = bufs[:, : x_c.shape[0]]  # [c, F] each
            torch.addmm(bv, x_c, Wv.T, out=a_c)
            torch.ops.aten.gelu.out(a_c, out=v)
            torch.mm(y_c, Wc1.T, out=uc)
            dWo.addmm_(g_c.T, torch.mul(uc, v, out=t))
            torch.mm(g_c, Wo, out=dp)  # dP
            duc = torch.mul(dp, v, out=t)  # dU_c = dP V
            dWc1.addmm_(duc.T, y_c)
            if dy1 is not None:
                torch.mm(duc, Wc1, out=dy1[s : s + c])
            da = torch.ops.aten.gelu_backward.grad_input(dp.mul_(uc), a_c, grad_input=v)  # dV GELU'(a)
            dWv.addmm_(da.T, x_c)
            dbv += da.sum(0)
            if dx is not None:
                torch.mm(da, Wv, out=dx[s : s + c])
        return dx, dy1, dWv, dbv, dWc1, dWo, g.sum(0)


def _gated_forward(x, y1, Wv, bv, Wc1, Wo, bo):
    """The chunked forward of :class:`_GatedOut`."""
    out = x.new_empty(x.shape[0], Wo.shape[0])
    c = _chunk_rows(Wv.shape[0])
    bufs = x.new_empty(2, min(c, x.shape[0]), Wv.shape[0])
    for s in range(0, x.shape[0], c):
        x_c = x[s : s + c]
        a = torch.addmm(bv, x_c, Wv.T, out=bufs[1, : x_c.shape[0]])
        p = torch.mm(y1[s : s + c], Wc1.T, out=bufs[0, : x_c.shape[0]]).mul_(F.gelu(a))
        torch.addmm(bo, p, Wo.T, out=out[s : s + c])
    return out
