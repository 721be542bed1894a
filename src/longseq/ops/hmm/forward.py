"""The scaled HMM forward algorithm as one ``torch.autograd.Function`` with a hand-written
backward (the reverse sweep of the recursion).

Why: under plain autograd every time step's ``alpha_t @ M`` leaves its own weight gradient
``alpha_t^T dpred_t``, a full ``[N, N]`` (full rank) or ``[N, r]`` (low rank) matrix written and
accumulated L times with only B rows behind it; in a profile of a large HMM the ``mm``/``fill_``/
``add_`` of those per-step weight gradients took most of the step (the figure:
benchmarks/notes/2026-12-08-docstring-timings.md). Here the reverse
sweep only propagates vectors (``dalpha_{t-1} = dpred_t M^T``) and stores the per-step adjoints; the
weight gradients are formed once at the end as single ``[N, B L] x [B L, .]`` matmuls.

Recursion (see :mod:`longseq.ops.hmm.naive`, the reference this is tested against): with
``w_t = exp(log_em_t - m_t)``, ``u_t = pred_t w_t``, ``c_t = sum u_t``, ``alpha_t = u_t / c_t``,
``logZ = sum_t (log c_t + m_t)`` and ``pred_{t+1} = alpha_t M_1 ... M_k``. Reverse sweep, with
``abar_t`` the adjoint of ``alpha_t`` (from ``pred_{t+1}``, plus the pass-through of a padded step)::

    ubar_t    = (gZ + abar_t - <abar_t, alpha_t>) / c_t
    log_em bar_t = ubar_t * u_t           (posterior marginals when gZ = 1 and P is unused)
    pred bar_t   = ubar_t * w_t  (+ the incoming gradient of P[:, t-1])
    abar_{t-1}   = pred bar_t M_k^T ... M_1^T,   M_j bar = sum_t h_{j-1,t}^T hbar_{j,t}

``m_t`` is a constant shift (logZ does not depend on it), so treating it as such is exact; the
clamp of ``c_t`` at the smallest normal float is ignored in the backward (it only acts when a
whole step underflows). Not twice differentiable.
"""

from __future__ import annotations

import torch


class _HMMForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_init, log_em, mask, want_pred, *mats):
        B, L, N = log_em.shape
        tiny = torch.finfo(log_em.dtype).tiny
        pred = log_init.exp().expand(B, N).contiguous()  # [B, N] pred_0
        alphas = log_em.new_empty(L, B, N)  # alpha_t
        preds = log_em.new_empty(L, B, N)  # pred_t (before emission)
        inter = [log_em.new_empty(L, B, M.shape[1]) for M in mats[:-1]]  # h_{j,t}, j = 1..k-1
        P = log_em.new_empty(B, L, N) if want_pred else None  # pred_{t+1}
        cs = log_em.new_empty(L, B)
        ms = log_em.new_empty(L, B)
        logz = log_em.new_zeros(B)
        alpha = None
        for t in range(L):
            e = log_em[:, t]  # [B, N]
            m = e.max(-1).values  # [B]
            u = pred * (e - m[:, None]).exp()
            c = u.sum(-1).clamp_min(tiny)  # [B]
            new = u / c[:, None]
            step = c.log() + m
            if mask is None or t == 0:
                alpha, logz = new, logz + step
            else:
                keep = mask[:, t]
                alpha = torch.where(keep[:, None], new, alpha)
                logz = logz + torch.where(keep, step, torch.zeros_like(step))
            preds[t], alphas[t], cs[t], ms[t] = pred, alpha, c, m
            if t + 1 < L or want_pred:
                h = alpha
                for j, M in enumerate(mats):
                    h = h @ M
                    if j + 1 < len(mats):
                        inter[j][t] = h
                pred = h
                if want_pred:
                    P[:, t] = pred
        ctx.save_for_backward(log_init, log_em, mask, alphas, preds, cs, ms, *inter, *mats)
        ctx.n_mats, ctx.want_pred = len(mats), want_pred
        if P is None:
            P = log_em.new_zeros(0)
        return logz, P

    @staticmethod
    def backward(ctx, gz, gP):
        log_init, log_em, mask, alphas, preds, cs, ms, *rest = ctx.saved_tensors
        k = ctx.n_mats
        inter, mats = rest[: k - 1], rest[k - 1 :]
        L, B, N = alphas.shape
        want_pred = ctx.want_pred and gP is not None and gP.numel() > 0
        if gz is None:
            gz = log_em.new_zeros(B)
        g_em = torch.zeros_like(log_em)  # [B, L, N]
        hbar = [log_em.new_zeros(L, B, M.shape[1]) for M in mats]  # adjoints of h_{j,t}
        pred_bar_next = None  # adjoint of pred_{t+1}
        carry = log_em.new_zeros(B, N)  # pass-through of padded steps
        for t in range(L - 1, -1, -1):
            pb = None
            if want_pred:
                pb = gP[:, t]
            if pred_bar_next is not None:
                pb = pred_bar_next if pb is None else pb + pred_bar_next
            abar = carry
            if pb is not None:
                hb = pb
                for j in range(k - 1, -1, -1):
                    hbar[j][t] = hb
                    hb = hb @ mats[j].T
                abar = abar + hb  # [B, N]
            alpha, c = alphas[t], cs[t]
            w = (log_em[:, t] - ms[t][:, None]).exp()
            u = preds[t] * w
            ubar = (gz[:, None] + abar - (abar * alpha).sum(-1, keepdim=True)) / c[:, None]
            if mask is not None and t > 0:
                keep = mask[:, t][:, None]
                ubar = torch.where(keep, ubar, torch.zeros_like(ubar))
                carry = torch.where(keep, torch.zeros_like(abar), abar)
            g_em[:, t] = ubar * u
            pred_bar_next = ubar * w  # adjoint of pred_t
        pi = log_init.exp()
        g_init = pred_bar_next.sum(0) * pi  # d/dlog_init
        # weight gradients, once: M_j bar = sum_t h_{j-1,t}^T hbar_{j,t}
        g_mats = []
        for j in range(k):
            h_prev = alphas if j == 0 else inter[j - 1]  # [L, B, d_in]
            g_mats.append(h_prev.reshape(L * B, -1).T @ hbar[j].reshape(L * B, -1))
        return (g_init, g_em, None, None, *g_mats)


def hmm_forward(
    log_init: torch.Tensor,
    log_em: torch.Tensor,
    mats: list[torch.Tensor],
    mask: torch.Tensor | None = None,
    want_pred: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``log_init: [N]``, ``log_em: [B, L, N]``, ``mats``: the transition as a product of matrices
    (``[A]`` full rank, ``[U, V^T]`` low rank), ``mask: [B, L]`` prefix mask or None.

    Returns ``(logZ [B], P [B, L, N] or None)``: the log-likelihood and, with ``want_pred``, the
    next-state distributions ``P[:, t] = p(z_{t+1} | x_<=t)``."""
    if not mats:
        raise ValueError("hmm_forward needs at least one transition matrix")
    logz, P = _HMMForward.apply(log_init, log_em, mask, want_pred, *mats)
    return logz, (P if want_pred else None)
