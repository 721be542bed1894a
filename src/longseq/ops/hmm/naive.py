"""Readable reference of the scaled HMM forward algorithm (plain autograd), the oracle for
:mod:`longseq.ops.hmm.forward`.

``pred_0 = exp(log_init)``; for t = 0..L-1: ``u_t = pred_t * exp(log_em_t - m_t)``,
``c_t = sum u_t``, ``alpha_t = u_t / c_t``, ``logZ += log c_t + m_t`` (rows where ``mask[:, t]`` is
False keep ``alpha_{t-1}`` and add nothing); ``pred_{t+1} = alpha_t M_1 ... M_k``.
Returns ``logZ [B]`` and ``P [B, L, N]`` with ``P[:, t] = pred_{t+1}``, the distribution of the
next state given the tokens up to t (Rabiner 1989, scaled forward; Chiu, Deng & Rush 2021 for
the factorised ``M_1 M_2 = U V^T``).
"""

from __future__ import annotations

import torch


def hmm_forward_naive(
    log_init: torch.Tensor, log_em: torch.Tensor, mask: torch.Tensor | None, mats: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logZ [B], P [B, L, N])`` of the scaled forward recursion in the module docstring, one time step
    at a time under autograd. ``log_init [N]``, ``log_em [B, L, N]`` (log p(x_t | z) per state),
    ``mask [B, L]`` (True = real token; the first position is always real), ``mats``: the transition as
    one ``[N, N]`` matrix or its factors ``[N, r]``, ``[r, N]``."""
    B, L, N = log_em.shape
    tiny = torch.finfo(log_em.dtype).tiny
    pred = log_init.exp().expand(B, N)  # [B, N]
    alpha = None
    logz = log_em.new_zeros(B)
    preds = []
    for t in range(L):
        e = log_em[:, t]  # [B, N]
        m = e.max(-1, keepdim=True).values.detach()  # [B, 1]
        u = pred * (e - m).exp()
        c = u.sum(-1, keepdim=True).clamp_min(tiny)
        new = u / c
        step = (c.log() + m).squeeze(-1)
        if mask is None or t == 0:
            alpha, logz = new, logz + step
        else:
            keep = mask[:, t]
            alpha = torch.where(keep[:, None], new, alpha)
            logz = logz + torch.where(keep, step, torch.zeros_like(step))
        pred = alpha
        for M in mats:
            pred = pred @ M  # [B, N] -> ... -> [B, N]
        preds.append(pred)
    return logz, torch.stack(preds, 1)


__all__ = ["hmm_forward_naive"]
