"""FAVOR+ positive random features and blocked bidirectional FAVOR+ attention, hand-written backward
(the fast twins of :mod:`.naive`).

Choromanski et al. 2021, "Rethinking Attention with Performers", Lemma 1 (positive random
features ``phi(x) = exp(w^T x - |x|^2 / 2) / sqrt(m)`` of the softmax kernel, inputs scaled by
``d^(-1/4)``) and Section 2.4 (normalised attention ``D^-1 phi(Q) (phi(K)^T V)``). The stabilisers
(a per-query max, a per-(sequence, head) max over keys) follow the official
``softmax_kernel_transformation`` (``numerical_stabilizer``): constants that the normalisation
cancels, given no gradient. Causal attention uses :func:`favor_softmax_features` followed by
:func:`longseq.ops.linear_attention.linear_attention_chunk`.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = ["favor_softmax_features", "favor_attention_bidirectional"]


def favor_softmax_features(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    is_query: bool,
    mask: torch.Tensor | None = None,
    running_max: torch.Tensor | None = None,
):
    """Positive random features of ``exp(q^T k / sqrt(d))`` (Performer Lemma 1), stabilised.

    ``x: [B, H, L, d]``, ``w: [m, d]``. Returns ``(phi [B, H, L, m], stabiliser)``. With
    ``x_s = x d^(-1/4)`` the log-features are ``x_s^T w_r - |x_s|^2 / 2 - log sqrt(m)`` minus a
    stabiliser. Queries: per query ([B, H, L, 1]); as the query's ``|x_s|^2 / 2`` is itself a
    per-query constant, ``phi_q = exp(x_s^T w_r - max_r x_s^T w_r) / sqrt(m)``. Keys: one value
    per (sequence, head) ([B, H]), the max over real keys of the log-features and ``running_max``.

    The normalised attention cancels every such constant (per query, or per sequence and head
    for keys), so the gradient treats them as constants; as a consequence the gradient of the
    QUERY features is exact only for normalised attention (the only use: the constant
    ``|x_s|^2 / 2`` gets no gradient). :class:`_FavorFeatures` keeps only ``phi`` for backward.
    """
    return _FavorFeatures.apply(x, w, is_query, mask, running_max)


def _favor_logits(xs: torch.Tensor, w: torch.Tensor, is_query: bool) -> torch.Tensor:
    """``x_s w^T`` (queries) or ``x_s w^T - |x_s|^2 / 2`` (keys, one matmul with an extra column)."""
    if is_query:
        return xs @ w.T  # [B, H, L, m]
    xs_aug = torch.cat([xs, (xs * xs).sum(-1, keepdim=True)], -1)  # [B, H, L, d + 1]
    return xs_aug @ torch.cat([w, w.new_full((w.shape[0], 1), -0.5)], 1).T


class _FavorFeatures(torch.autograd.Function):
    """FAVOR+ softmax features (see :func:`favor_softmax_features`), computed in place; the
    backward needs only ``phi``: ``dL/dx_s = (g phi) w - [keys] x_s sum_r (g phi)_r``."""

    @staticmethod
    def forward(ctx, x, w, is_query, mask, running_max):
        d, m = x.shape[-1], w.shape[0]
        xs = x * d**-0.25
        logits = _favor_logits(xs, w, is_query)  # [B, H, L, m]
        log_scale = 0.5 * math.log(m)  # the 1 / sqrt(m), folded into exp
        if is_query:
            stab = logits.amax(-1, keepdim=True)  # [B, H, L, 1]
            phi = logits.sub_(stab + log_scale).exp_()
        else:
            if mask is not None:
                logits.masked_fill_(~mask[:, None, :, None], float("-inf"))
            stab = logits.amax(dim=(-2, -1))  # [B, H]
            stab = stab.clamp_min(torch.finfo(stab.dtype).min)  # finite even with no real key
            if running_max is not None:
                stab = torch.maximum(stab, running_max)
            phi = logits.sub_((stab + log_scale)[:, :, None, None]).exp_()
        ctx.save_for_backward(phi, w, None if is_query else xs)
        ctx.scale = d**-0.25
        ctx.mark_non_differentiable(stab)
        return phi, stab

    @staticmethod
    @once_differentiable
    def backward(ctx, g_phi, _g_stab):
        phi, w, xs = ctx.saved_tensors
        g = g_phi * phi  # d loss / d log-features
        gx = g @ w  # [B, H, L, d]
        if xs is not None:  # keys: the -|x_s|^2 / 2 term
            gx -= xs * g.sum(-1, keepdim=True)
        return gx * ctx.scale, None, None, None, None


def favor_attention_bidirectional(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    mask: torch.Tensor | None = None,
    block_size: int = 1024,
) -> torch.Tensor:
    """Non-causal FAVOR+ softmax attention ``o = phi(Q) [phi(K)^T V] / phi(Q) [phi(K)^T 1]``.

    ``q, k, v: [B, H, L, d]``, ``w: [m, d]``, ``mask: [B, L]`` (False = padded key). The same
    function as :func:`favor_softmax_features` + :func:`longseq.ops.linear_attention.linear_attention_bidirectional`
    (eps = 0), as one autograd function (:class:`_FavorBidirectional`): every ``L x m`` feature
    tensor is made and used in blocks of ``block_size`` tokens, in place, with a hand-written
    backward. On CPU, blocks that fit in cache and the absence of fresh ``[B, H, L, m]``
    temporaries (each one a page-faulting allocation) make it faster than the autograd
    composition of the two functions (scripts/profile_attention.py; the figure is in
    benchmarks/notes/2026-12-08-docstring-timings.md).
    """
    return _FavorBidirectional.apply(q, k, v, w, mask, block_size)


def _blocks(L: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, L)) for i in range(0, L, size)]


def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """``[v, 1]``: the ones column turns ``phi(K)^T [V, 1]`` into numerator and denominator sums."""
    return torch.cat([v, v.new_ones(*v.shape[:-1], 1)], -1)


class _FavorBidirectional(torch.autograd.Function):
    """See :func:`favor_attention_bidirectional`. With ``S = phi(K)^T [V, 1]`` ([m, Dv + 1]),
    ``N = phi(Q) S`` (its last column the denominator ``den``) and ``o = N[:Dv] / den``, the
    backward is ``dN = [g, -g.o] / den``, ``dphi(Q) = dN S^T``, ``dS = phi(Q)^T dN``,
    ``dphi(K) = [V, 1] dS^T``, ``dV = phi(K) dS[:Dv]``, then through the features as in
    :class:`_FavorFeatures`. The features of each block are kept for the backward."""

    @staticmethod
    def forward(ctx, q, k, v, w, mask, block_size):
        L, Dv, s = q.shape[2], v.shape[-1], q.shape[-1] ** -0.25
        log_scale = 0.5 * math.log(w.shape[0])
        blocks = _blocks(L, block_size)
        xq, xk, v1 = q.contiguous() * s, k.contiguous() * s, _with_ones(v)  # [B, H, L, *]
        fk = []  # key log-features, then features
        for b in blocks:
            logits = _favor_logits(xk[:, :, b], w, is_query=False)  # [B, H, n, m]
            if mask is not None:
                logits.masked_fill_(~mask[:, None, b, None], float("-inf"))
            fk.append(logits)
        stab = torch.stack([f.amax(dim=(-2, -1)) for f in fk]).amax(0)  # [B, H]
        stab = stab.clamp_min(torch.finfo(stab.dtype).min)  # finite even with no real key
        S = 0
        for b, f in zip(blocks, fk):
            f.sub_((stab + log_scale)[:, :, None, None]).exp_()
            S = S + f.transpose(-1, -2) @ v1[:, :, b]  # [B, H, m, Dv + 1]
        fq, o, inv = [], torch.empty_like(v1[..., :Dv]), torch.empty_like(v1[..., Dv:])
        tiny = torch.finfo(q.dtype).tiny ** 0.5
        for b in blocks:
            logits = _favor_logits(xq[:, :, b], w, is_query=True)  # [B, H, n, m]
            fq.append(logits.sub_(logits.amax(-1, keepdim=True) + log_scale).exp_())
            N = fq[-1] @ S  # [B, H, n, Dv + 1]
            den = N[..., Dv:]
            ok = ~(den <= tiny)  # 0 (and no gradient) on underflow; NaN is kept (propagates)
            inv[:, :, b] = torch.where(ok, 1 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
            o[:, :, b] = N[..., :Dv] * inv[:, :, b]
        ctx.save_for_backward(w, xk, v1, S, o, inv, *fq, *fk)  # the features: intermediates, freed
        ctx.blocks, ctx.scale = blocks, s  # by autograd after the backward
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        w, xk, v1, S, o, inv, *f = ctx.saved_tensors
        fq, fk = f[: len(ctx.blocks)], f[len(ctx.blocks) :]
        dN = torch.cat([g, -(g * o).sum(-1, keepdim=True)], -1) * inv  # [B, H, L, Dv + 1]
        dq, dk, dv1 = torch.empty_like(xk), torch.empty_like(xk), torch.empty_like(v1)
        dS = 0
        for b, f in zip(ctx.blocks, fq):
            dS = dS + f.transpose(-1, -2) @ dN[:, :, b]  # [B, H, m, Dv + 1]
            gq = (dN[:, :, b] @ S.transpose(-1, -2)).mul_(f)  # d loss / d query log-features
            dq[:, :, b] = gq @ w  # (their per-query constant: none)
        for b, f in zip(ctx.blocks, fk):
            dv1[:, :, b] = f @ dS
            gk = (v1[:, :, b] @ dS.transpose(-1, -2)).mul_(f)  # d loss / d key log-features
            dk[:, :, b] = gk @ w - xk[:, :, b] * gk.sum(-1, keepdim=True)
        return dq.mul_(ctx.scale), dk.mul_(ctx.scale), dv1[..., :-1], None, None, None
