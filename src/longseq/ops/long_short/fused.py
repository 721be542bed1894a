"""Transformer-LS causal long-short attention, flash-attention style (the fast twin of :mod:`.naive`).

Zhu et al. 2021, "Long-Short Transformer", Section 3.3 eq. (5) (one softmax over the union of the
long-range and the short-term keys) in the autoregressive form of Section 3.4 (official
``ChunkedLSAttention``): a query sees the compressed keys of the chunks strictly before its own
and a window of the last ``w`` keys, itself included. The compressed keys and the window keys are
built by the mixer (:mod:`longseq.mixers.transformer_ls`); this op scores and mixes them.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["causal_long_short_attention"]


def causal_long_short_attention(
    q: torch.Tensor,
    qw: torch.Tensor,
    kl: torch.Tensor,
    vl: torch.Tensor,
    kw: torch.Tensor,
    vw: torch.Tensor,
    q_chunk: torch.Tensor,
    key_chunk: torch.Tensor,
    long_ok: torch.Tensor | None,
    win_ok: torch.Tensor | None,
    n_w: int,
    window: int,
    block: int,
) -> torch.Tensor:
    """``o [B, H, L, Dh]``: queries ``q`` (long-range scores) and ``qw`` (window scores) ``[B, H, L, Dh]``;
    long-range keys/values ``kl, vl [B, H, M, Dh]`` sorted by ``key_chunk [M]`` (the chunk each was
    compressed from; query ``i`` of chunk ``q_chunk[i]`` sees those with ``key_chunk < q_chunk[i]`` and
    ``long_ok [B, M]``); window keys/values ``kw, vw [B, H, n_w + L, Dh]`` (the ``n_w`` cached ones first;
    query ``i`` sees positions ``n_w + i - window < j <= n_w + i`` with ``win_ok [B, n_w + L]``);
    ``block`` queries per super-block (a multiple of ``window``). A query with no allowed key gets 0."""
    return _CausalLongShort.apply(q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, (n_w, window, block))


class _CausalLongShort(torch.autograd.Function):
    """One softmax per query over its long-range keys ``K_bar`` (plain query ``q``) and its window
    of the last ``w`` keys (``q_w``, rotated when ``rope``), flash-attention style: queries are
    taken in super-blocks of ``block`` (a multiple of ``w``) tokens; a super-block scores the
    prefix of ``K_bar`` its queries may see (``[B, H, n, M]``, masked only on its own chunks'
    keys) and, per sub-block of ``w`` queries, the ``2 w`` window keys around it
    (``[B, H, n / w, w, 2 w]``). Nothing of size ``L x (number of keys)`` is kept: the backward
    recomputes the probabilities from the saved row maxima and sums. A query with no allowed
    key gets output 0.

    ``exp`` is evaluated at ``max(s - rowmax, -80)``: a probability below ``e^-80 = 1.8e-35``
    (relative to the row's largest) is raised to that, far below float32 resolution, because
    ``exp`` of more negative arguments (masked scores included, which are then zeroed) takes a much
    slower path on CPU (benchmarks/notes/2026-12-08-docstring-timings.md).

    Backward, with ``P`` the probabilities and ``D_i = sum_d dO_id O_id``:
    ``dS = P (dO V^T - D)``, ``dQ = dS K / sqrt(Dh)``, ``dK = dS^T Q / sqrt(Dh)``, ``dV = P^T dO``;
    the window keys' gradients are summed back from the overlapping spans.
    """

    @staticmethod
    def forward(ctx, q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, sizes):
        L, (n_w, w, block) = q.shape[2], sizes
        Lp = -(-L // w) * w
        scale = q.shape[-1] ** -0.5
        q, qw = _pad_rows(q * scale, Lp), _pad_rows(qw * scale, Lp)  # [B, H, Lp, Dh]
        kwp, vwp, okp = _pad_window(kw, vw, win_ok, n_w, L, w)  # [B, H, Np, Dh], [B|1, Np]
        o = q.new_empty(q.shape)
        rowmax, inv_sum = q.new_empty(q.shape[:-1] + (1,)), q.new_empty(q.shape[:-1] + (1,))
        for blk in _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
            s_l, s_w = blk.scores(q, qw, kl)
            m = s_w.amax(-1).flatten(-2, -1).unsqueeze(-1)  # [B, H, n, 1]
            if s_l is not None:
                m = torch.maximum(m, s_l.amax(-1, keepdim=True))
            m.clamp_min_(torch.finfo(m.dtype).min)  # finite for empty rows
            p_l, p_w = blk.probs(s_l, s_w, m)
            total = p_w.sum(-1).flatten(-2, -1).unsqueeze(-1)
            if p_l is not None:
                total += p_l.sum(-1, keepdim=True)
            inv = torch.where(total > 0, 1 / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
            p_w.mul_(inv.unflatten(2, p_w.shape[2:4]))
            o_b = (p_w @ blk.v_span).flatten(2, 3)  # [B, H, n, Dh]
            if p_l is not None:
                o_b += p_l.mul_(inv) @ vl[:, :, : blk.M]
            o[:, :, blk.i0 : blk.i1], rowmax[:, :, blk.i0 : blk.i1], inv_sum[:, :, blk.i0 : blk.i1] = o_b, m, inv
        ctx.save_for_backward(q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, o, rowmax, inv_sum)
        ctx.sizes = sizes
        return o[:, :, :L]

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, o, rowmax, inv_sum = ctx.saved_tensors
        (n_w, w, block), L, Lp = ctx.sizes, kw.shape[2] - ctx.sizes[0], q.shape[2]
        kwp, vwp, okp = _pad_window(kw, vw, win_ok, n_w, L, w)
        do = _pad_rows(do, Lp)
        D = (do * o).sum(-1, keepdim=True)  # [B, H, Lp, 1]
        dq, dqw = torch.empty_like(q), torch.empty_like(qw)
        dkl, dvl, dkwp, dvwp = (torch.zeros_like(t) for t in (kl, vl, kwp, vwp))
        for blk in _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
            i0, i1, M = blk.i0, blk.i1, blk.M
            s_l, s_w = blk.scores(q, qw, kl)
            m, inv = rowmax[:, :, i0:i1], inv_sum[:, :, i0:i1]
            p_l, p_w = blk.probs(s_l, s_w, m)
            do_b, D_b = do[:, :, i0:i1], D[:, :, i0:i1]
            do_w = do_b.unflatten(2, p_w.shape[2:4])  # [B, H, n / w, w, Dh]
            p_w.mul_(inv.unflatten(2, p_w.shape[2:4]))
            ds_w = (do_w @ blk.v_span.transpose(-1, -2)).sub_(D_b.unflatten(2, p_w.shape[2:4])).mul_(p_w)
            dqw[:, :, i0:i1] = (ds_w @ blk.k_span).flatten(2, 3)
            blk.add_span_grads(dkwp, ds_w.transpose(-1, -2) @ blk.qw_sub)
            blk.add_span_grads(dvwp, p_w.transpose(-1, -2) @ do_w)
            if p_l is None:
                dq[:, :, i0:i1] = 0
                continue
            p_l.mul_(inv)
            ds_l = (do_b @ vl[:, :, :M].transpose(-1, -2)).sub_(D_b).mul_(p_l)  # [B, H, n, M]
            dq[:, :, i0:i1] = ds_l @ kl[:, :, :M]
            dkl[:, :, :M] += ds_l.transpose(-1, -2) @ q[:, :, i0:i1]
            dvl[:, :, :M] += p_l.transpose(-1, -2) @ do_b
        scale = q.shape[-1] ** -0.5
        f = _front_pad(n_w, w)
        window = slice(f, f + n_w + L)
        return (
            dq[:, :, :L].mul_(scale),
            dqw[:, :, :L].mul_(scale),
            dkl,
            dvl,
            dkwp[:, :, window],
            dvwp[:, :, window],
            *([None] * 5),
        )


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero rows appended along dim 2 up to ``n``."""
    return t if t.shape[2] == n else torch.cat([t, t.new_zeros(*t.shape[:2], n - t.shape[2], t.shape[3])], 2)


def _front_pad(n_w: int, w: int) -> int:
    """Zero keys put before the window keys so that ``n_w`` (the cached ones) + pad is a multiple of w."""
    return w + (-n_w) % w


def _pad_window(kw, vw, win_ok, n_w, L, w):
    """Window keys/values ``[B, H, n_w + L, Dh]`` padded (zeros, not allowed) in front to align query
    sub-blocks to key blocks of ``w`` and behind to a whole block plus one; and their validity."""
    f, back = _front_pad(n_w, w), w + (-L) % w
    B = kw.shape[0]
    ok = win_ok if win_ok is not None else torch.ones(1, n_w + L, dtype=torch.bool, device=kw.device)
    okp = torch.cat([ok.new_zeros(ok.shape[0], f), ok, ok.new_zeros(ok.shape[0], back)], 1)
    pad = lambda t: torch.cat(
        [
            t.new_zeros(B, t.shape[1], f, t.shape[3]),
            t,  # noqa: E731
            t.new_zeros(B, t.shape[1], back, t.shape[3]),
        ],
        2,
    )
    return pad(kw), pad(vw), okp


class _SuperBlock:
    """Queries ``[i0, i1)`` (padded coordinates; a multiple of ``w`` long) of :class:`_CausalLongShort`:
    its long-range key prefix ``[0, M)`` (the memory, then the compressed keys of chunks before the
    chunk of its last query; the first ``M0`` seen by all its queries: none with padded chunks) and,
    per sub-block of ``w`` queries, the spans of ``2 w`` window keys that end with the sub-block."""

    def __init__(self, i0, i1, L, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
        self.i0, self.i1, self.w = i0, i1, w
        last = q_chunk[min(i1, L) - 1]  # chunk of the last real query
        self.M = int((key_chunk < last).sum())  # keys sorted by chunk
        self.M0 = 0 if long_ok is not None else int((key_chunk < q_chunk[i0]).sum())
        self.allowed_long = None
        if self.M > self.M0:
            qc = q_chunk[i0 : min(i1, L)]
            qc = torch.cat([qc, qc.new_full((i1 - i0 - qc.shape[0],), int(qc[-1]))])  # padded rows: as the last
            allowed = key_chunk[None, self.M0 : self.M] < qc[:, None]  # [n, M - M0]
            if long_ok is not None:
                allowed = allowed[None] & long_ok[:, None, self.M0 : self.M]
            self.allowed_long = allowed.view(-1, 1, *allowed.shape[-2:])  # [B|1, 1, n, M - M0]
        n_sub = (i1 - i0) // w
        self.b0 = (n_w + i0 + _front_pad(n_w, w)) // w - 1  # first key block of the spans
        spans = lambda t: torch.cat(
            [t[:, :, self.b0 : self.b0 + n_sub], t[:, :, self.b0 + 1 : self.b0 + n_sub + 1]],  # noqa: E731
            dim=3,
        )
        blocks = lambda t: t.unflatten(2, (-1, w))  # noqa: E731  [B, H, Np / w, w, Dh]
        self.k_span, self.v_span = spans(blocks(kwp)), spans(blocks(vwp))  # [B, H, n_sub, 2 w, Dh]
        ok = spans(okp.unflatten(1, (-1, w))[:, None, ..., None])[..., 0]  # [B|1, 1, n_sub, 2 w]
        c = torch.arange(2 * w, device=okp.device)
        rel = w + torch.arange(w, device=okp.device)[:, None] - c  # query - key position
        self.allowed_win = ((rel >= 0) & (rel < w)) & ok[..., None, :]  # [B|1, 1, n_sub, w, 2 w]

    def scores(self, q, qw, kl):
        """``(q K_bar^T [B, H, n, M] or None, q_w K_span^T [B, H, n / w, w, 2 w])``, -inf where not allowed."""
        self.qw_sub = qw[:, :, self.i0 : self.i1].unflatten(2, (-1, self.w))
        s_w = (self.qw_sub @ self.k_span.transpose(-1, -2)).masked_fill_(~self.allowed_win, float("-inf"))
        if self.M == 0:
            return None, s_w
        s_l = q[:, :, self.i0 : self.i1] @ kl[:, :, : self.M].transpose(-1, -2)
        if self.allowed_long is not None:
            s_l[..., self.M0 :].masked_fill_(~self.allowed_long, float("-inf"))
        return s_l, s_w

    def probs(self, s_l, s_w, m):
        """Unnormalised probabilities ``exp(max(s - m, -80))``, 0 where not allowed (in place)."""
        p_w = s_w.sub_(m.unflatten(2, s_w.shape[2:4])).clamp_min_(-80.0).exp_().masked_fill_(~self.allowed_win, 0.0)
        if s_l is None:
            return None, p_w
        p_l = s_l.sub_(m).clamp_min_(-80.0).exp_()
        if self.allowed_long is not None:
            p_l[..., self.M0 :].masked_fill_(~self.allowed_long, 0.0)
        return p_l, p_w

    def add_span_grads(self, g_padded, g_span):
        """Add ``g_span [B, H, n_sub, 2 w, Dh]`` (gradients of the spans' keys) to the padded keys'."""
        blocks = g_padded.unflatten(2, (-1, self.w))  # a view
        n_sub = g_span.shape[2]
        blocks[:, :, self.b0 : self.b0 + n_sub] += g_span[..., : self.w, :]
        blocks[:, :, self.b0 + 1 : self.b0 + n_sub + 1] += g_span[..., self.w :, :]


def _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
    for i0 in range(0, Lp, block):
        yield _SuperBlock(i0, min(i0 + block, Lp), L, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp)
