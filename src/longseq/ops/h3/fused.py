"""H3's training path as one autograd function, projections included (the fast twin of :mod:`.naive`).

Fu, Dao, Saab, Thomas, Rudra, Ré 2023, "Hungry Hungry Hippos", Section 3.1 / Algorithm 1:
``Q, K, V`` projections, ``K' = SSM_shift(K)`` (a length-N FIR, :func:`..diag_ssm.chunk.fir_conv`),
per head the outer product ``K' V^T`` through the diagonal SSM (:func:`..diag_ssm.chunk.diag_ssm_chunked`,
S4D-Lin init), contracted with ``Q``, then the output projection. Causal only (the paper's H3 is a
language-model layer). Memory and in-place schedule: see :class:`_H3Core`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from ..diag_ssm.chunk import (
    chunked_backward,
    chunked_forward,
    diag_ssm_chunked,
    fir_chunks,
    fir_chunks_backward,
    fir_conv,
)

__all__ = ["h3_core"]


def h3_core(
    x: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    taps: torch.Tensor,
    w: torch.Tensor,
    log_z: torch.Tensor,
    D: torch.Tensor,
    Wo: torch.Tensor,
    bo: torch.Tensor,
    head_dim: int,
    chunk: int,
) -> torch.Tensor:
    """``x [B, L, d]`` -> ``[B, L, d]``: ``W [3d, d]``, ``b [3d]`` (``W_Q, W_K, W_V`` stacked), ``taps [d, N]``
    (shift SSM with its skip at lag 0), ``w, log_z [d/head_dim, N/2]`` complex, ``D [d/head_dim]``, the
    output projection ``Wo [d, d]``, ``bo [d]``; ``chunk`` the SSMs' chunk length (``>= N``). No state."""
    if x.dtype != log_z.real.dtype:
        raise ValueError(
            f"h3_core: x must have the modes' real dtype {log_z.real.dtype} (float32 or float64), "
            f"got {x.dtype}; half-precision inputs go through the mixer's plain path"
        )
    B, L, _ = x.shape
    return _H3Core.apply(x, W, b, taps, w, log_z, D, Wo, bo, head_dim, _heads_per_group(head_dim, B, L), chunk)


def _core(q, k, v, taps, w, log_z, D, hd):
    """Algorithm 1 between the projections for a group of heads: ``q, k, v [B, c, L]`` (``c`` channels
    = heads x ``hd``), ``taps [c, N]`` (shift SSM with its skip), ``w, log_z [heads, N/2]``, ``D [heads]``."""
    kp = fir_conv(k, taps)  # K' = SSM_shift(K)
    if hd == 1:  # K'V^T is elementwise
        y, _ = diag_ssm_chunked(kp * v, w, log_z, D=D)  # [B, c, L]
        return q * y
    kv = rearrange(kp, "b (h i) l -> b i 1 h l", i=hd) * rearrange(v, "b (h j) l -> b 1 j h l", j=hd)
    y, _ = diag_ssm_chunked(kv, w, log_z, D=D)  # [B, dh, dh, H, L]
    return rearrange((rearrange(q, "b (h i) l -> b i 1 h l", i=hd) * y).sum(1), "b j h l -> b (h j) l")


def _core_chunks(q, k, v, taps, w, log_z, D, T, out):
    """:func:`_core` for ``head_dim = 1`` in chunk layout: ``q, k, v [c, B, J, T]`` (channel-major;
    positions padded at the end change nothing before them: everything is causal), written into
    ``out`` (contiguous, the same shape)."""
    c, B, J, _ = q.shape
    u = fir_chunks(k, taps).mul_(v)  # K' V  (hd = 1)
    chunked_forward(u.view(c, B * J, T), w, log_z, None, D, None, B, T, out=out.view(c, B * J, T))
    out.mul_(q)


def _core_chunks_backward(q, k, v, taps, w, log_z, D, go, T):
    """Hand-written backward of :func:`_core_chunks` for the output gradient ``go``, recomputing
    ``K'`` and ``K'V``, in place: ``q`` becomes ``O = Q Y`` (the output projection's input), ``go``
    becomes ``dQ``, ``k`` and ``v`` become ``dK`` and ``dV``. Returns ``(dtaps, dw, dlog_z, dD)``. The
    diagonal SSM's backward rebuilds its forward anyway and returns ``Y`` too
    (:func:`longseq.ops.diag_ssm.chunk.chunked_backward`)."""
    c, B, J, _ = q.shape
    kp = fir_chunks(k, taps)
    u = kp * v
    dy = go * q
    zero = w.new_zeros(c, B, w.shape[-1])
    du, dw, dlz, _, dD, _, y = chunked_backward(
        u.view(c, B * J, T), w, log_z, None, D, None, dy.view(c, B * J, T), zero, B, T, True, want_y=True
    )
    del dy
    y, du = y.view_as(q), du.view_as(q)
    q.mul_(y)  # O = Q Y
    go.mul_(y)  # dQ = dO Y
    del y
    torch.mul(du, v, out=u)  # dK' = d(K'V) V
    torch.mul(du, kp, out=v)  # dV = d(K'V) K'
    del kp, du
    _, dtaps = fir_chunks_backward(k, taps, u, out=k)  # dK (k is read first)
    return dtaps, dw, dlz, dD


def _core_autograd_backward(q, k, v, taps, w, log_z, D, go, hd):
    """:func:`_core`'s backward by autograd on the recomputed forward (any ``head_dim``); tensors
    ``[B, c, L]``: ``(o, dq, dk, dv, dtaps, dw, dlog_z, dD)``."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v, taps, w, log_z, D)]
    with torch.enable_grad():
        o = _core(*leaves, hd)
        grads = torch.autograd.grad(o, leaves, go)
    return (o.detach(), *grads)


def _heads_per_group(hd: int, batch: int, L: int) -> int:
    """Heads per group of :class:`_H3Core`: ~512K elements (2 MB float32) per ``[B, dh, dh, heads, L]`` transient."""
    return max(1, (1 << 19) // (batch * hd * hd * L))


class _H3Core(torch.autograd.Function):
    """The training path, projections included: ``x [B, L, d]``, ``W [3d, d]``, ``b [3d]`` (``W_Q,
    W_K, W_V`` stacked), the SSM parameters, ``Wo [d, d]``, ``bo [d]`` (output projection) -> ``[B, L, d]``.

    Forward: ``Q, K, V`` by one ``[3d, d] @ [d, B L]`` matmul into a channel-major ``[3, d, B, L']``
    buffer (every channel's sequence contiguous and, with ``L'`` the length rounded up to the chunk
    ``T``, already in the ``[c, B, J, T]`` chunk layout of the SSMs: no copies), Algorithm 1 over
    groups of heads, then the output projection as one matmul. Saved: ``x`` and ``Q, K, V``
    (``3 B L d``) — recomputing them cost three of the eight ``d x d`` matmuls of the step.

    Backward: ``dO = g W_o`` (one matmul, channel-major; per group it was slower), then per
    group of heads (every ``[c, B, L]`` tensor below is a transient of one group)
    :func:`_core_chunks_backward` (``head_dim = 1``, hand-written) or autograd on the recomputed
    :func:`_core`, in place: ``Q_c -> O_c``, ``dO_c -> dQ_c``, ``K_c -> dK_c``, ``V_c -> dV_c``. After the
    loop ``dW_o = g^T O``, ``dx = dQKV^T W``, ``dW = dQKV x`` are one matmul each (per group they were
    slower: many small matmuls; figures in benchmarks/notes/2026-12-08-docstring-timings.md) and no
    ``dQKV`` or ``dx`` is held during the loop. ``Q, K, V`` live on
    ``ctx``, not in ``save_for_backward``: the backward consumes and drops them, and a second
    backward through a retained graph recomputes them from ``x``. The output projection's input
    ``O`` is never kept (a separate ``nn.Linear`` would save it).
    """

    @staticmethod
    def forward(ctx, x, W, b, taps, w, log_z, D, Wo, bo, hd, heads, T):
        B, L, d = x.shape
        Lp = -(-L // T) * T
        x2 = (x if Lp == L else F.pad(x, (0, 0, 0, Lp - L))).reshape(-1, d)  # [B L', d]
        qkv = torch.addmm(b.unsqueeze(1), W, x2.T).view(3, d, B, Lp)
        o = x.new_empty(d, B, Lp)
        for h, c in _head_groups(w.shape[0], hd, heads):
            q, k, v = qkv[:, c].unbind(0)  # [c, B, L']
            if hd == 1:
                q, k, v, oc = (t.view(-1, B, Lp // T, T) for t in (q, k, v, o[c]))
                _core_chunks(q, k, v, taps[c], w[h], log_z[h], D[h], T, out=oc)
            else:
                o[c] = _core(
                    q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), taps[c], w[h], log_z[h], D[h], hd
                ).transpose(0, 1)
        out = torch.addmm(bo, o.view(d, -1).T, Wo.T).view(B, Lp, d)
        ctx.save_for_backward(x2, W, b, taps, w, log_z, D, Wo)
        ctx.qkv = qkv  # an intermediate: the backward overwrites it, then drops it
        ctx.hd, ctx.heads, ctx.T, ctx.L = hd, heads, T, L
        return out[:, :L] if Lp > L else out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x2, W, b, taps, w, log_z, D, Wo = ctx.saved_tensors
        qkv, ctx.qkv = ctx.qkv, None
        BLp, d = x2.shape
        T, hd, Lp = ctx.T, ctx.hd, -(-ctx.L // ctx.T) * ctx.T
        B = BLp // Lp
        if qkv is None:  # a second backward through a retained graph: the first consumed it
            qkv = torch.addmm(b.unsqueeze(1), W, x2.T).view(3, d, B, Lp)
        g2 = (g if Lp == ctx.L else F.pad(g, (0, 0, 0, Lp - ctx.L))).reshape(-1, d)  # [B L', d]
        dparams = [torch.zeros_like(t) for t in (taps, w, log_z, D)]
        gO = torch.mm(Wo.T, g2.T).view(d, B, Lp)  # dO, then dQ
        for h, c in _head_groups(w.shape[0], hd, ctx.heads):
            params = (taps[c], w[h], log_z[h], D[h])
            q, k, v = qkv[:, c].unbind(0)  # [c, B, L']
            if hd == 1:  # in place: q -> O, gO -> dQ, k -> dK, v -> dV
                dparts = _core_chunks_backward(
                    *(t.view(-1, B, Lp // T, T) for t in (q, k, v)), *params, gO[c].view(-1, B, Lp // T, T), T
                )
            else:
                o, dq, dk, dv, *dparts = _core_autograd_backward(
                    *(t.transpose(0, 1) for t in (q, k, v)), *params, gO[c].transpose(0, 1), hd
                )
                for dst, src in zip((q, gO[c], k, v), (o, dq, dk, dv)):
                    dst.copy_(src.transpose(0, 1))
                del o, dq, dk, dv
            del q, k, v
            for out, part, i in zip(dparams, dparts, (c, h, h, h)):  # taps by channel
                out[i] = part
        # every group done: qkv holds (O, dK, dV) and gO holds dQ — one matmul each for the weights
        O, dkv, dq = qkv[0].view(d, -1), qkv[1:].view(2 * d, -1), gO.view(d, -1)
        dWo = torch.mm(g2.T, O.T)
        dx = torch.mm(dq.T, W[:d]).addmm_(dkv.T, W[d:])  # [B L', d]
        dW = torch.cat([torch.mm(dq, x2), torch.mm(dkv, x2)])
        db = torch.cat([dq.sum(1), dkv.sum(1)])
        del qkv, gO, O, dkv, dq
        dx = dx.view(B, Lp, d)
        return (dx[:, : ctx.L] if Lp > ctx.L else dx, dW, db, *dparams, dWo, g2.sum(0), None, None, None)


def _head_groups(nh: int, hd: int, heads: int):
    """``(head slice, channel slice)`` of each group of ``heads`` heads."""
    for h in range(0, nh, heads):
        yield slice(h, h + heads), slice(h * hd, min(nh, h + heads) * hd)
