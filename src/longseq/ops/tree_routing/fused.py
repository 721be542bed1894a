"""Treeformer's root-to-leaf path gathers, one tree level at a time (the fast twins of :mod:`.naive`).

Madaan et al. 2023 (ICLR), "Treeformer: Dense Gradient Trees for Efficient Attention Computation",
arXiv 2208.09015, Section 3: routing ``x`` through the decision tree's hyperplanes, and
TC-attention (a query attends to the aggregated keys and values of the nodes on its path; see
:mod:`longseq.mixers.treeformer` for the method and its open decisions). Both need, per
token, ``P`` rows of a node table picked by an index ``[M, P]``. Gathering them at once would
keep an ``[M, P, Dh]`` tensor for the backward; here each level is gathered, used and dropped.
"""

from __future__ import annotations

import torch

__all__ = ["path_logits", "path_mix"]


def path_logits(q: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[m, n] = q[m] . table[idx[m, n]]``: ``q [M, Dh]``, ``table [T, Dh]``, ``idx [M, P]`` -> ``[M, P]``."""
    return _PathLogits.apply(q, table, idx)


def path_mix(p: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[m] = sum_n p[m, n] table[idx[m, n]]``: ``p [M, P]``, ``table [T, Dh]``, ``idx [M, P]`` -> ``[M, Dh]``."""
    return _PathMix.apply(p, table, idx)


class _PathLogits(torch.autograd.Function):
    """``out[m, n] = q[m] . table[idx[m, n]]`` without storing the gathered ``[M, P, Dh]`` rows
    (one level at a time forward and backward: O(M Dh) temporaries instead of O(M P Dh))."""

    @staticmethod
    def forward(ctx, q, table, idx):  # q: [M, Dh], table: [T, Dh], idx: [M, P]
        ctx.save_for_backward(q, table, idx)
        return torch.stack([(q * table[idx[:, n]]).sum(-1) for n in range(idx.shape[1])], -1)

    @staticmethod
    def backward(ctx, grad):  # grad: [M, P]
        q, table, idx = ctx.saved_tensors
        grad_q, grad_t = torch.zeros_like(q), torch.zeros_like(table)
        for n in range(idx.shape[1]):
            grad_q += grad[:, n, None] * table[idx[:, n]]
            grad_t.index_add_(0, idx[:, n], grad[:, n, None] * q)
        return grad_q, grad_t, None


class _PathMix(torch.autograd.Function):
    """``out[m] = sum_n p[m, n] table[idx[m, n]]`` without storing the gathered rows."""

    @staticmethod
    def forward(ctx, p, table, idx):  # p: [M, P], table: [T, Dh], idx: [M, P]
        ctx.save_for_backward(p, table, idx)
        out = p.new_zeros(p.shape[0], table.shape[1])
        for n in range(idx.shape[1]):
            out += p[:, n, None] * table[idx[:, n]]
        return out

    @staticmethod
    def backward(ctx, grad):  # grad: [M, Dh]
        p, table, idx = ctx.saved_tensors
        grad_t = torch.zeros_like(table)
        grad_p = torch.stack([(grad * table[idx[:, n]]).sum(-1) for n in range(idx.shape[1])], -1)
        for n in range(idx.shape[1]):
            grad_t.index_add_(0, idx[:, n], grad * p[:, n, None])
        return grad_p, grad_t, None
