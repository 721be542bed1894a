"""Chunked ("Toeplitz in the chunk + state passing") convolutions: the diagonal SSM and short FIRs.

The diagonal SSM of :mod:`longseq.ssm.kernels` (``x_l = z x_{l-1} + u_l``, ``y_l = Re sum_n w_n x_{l,n}``,
kernel ``K_l = Re sum_n w_n z_n^l``) cut into chunks of ``T`` positions, ``l = j T + t``
(the block form of SSD, Dao & Gu 2024, Section 6, and of FlashConv, H3 Section 4.2)::

    (1) inside a chunk       y_{j,s}  = sum_{t <= s} K_{s-t} u_{j,t}              [H, JB, T] @ [H, T, T]
    (2) chunk-end states     S_j      = sum_t z^{T-1-t} u_{j,t}                  [H, JB, T] @ [H, T, 2N]
    (3) carried over chunks  X_j      = z^T X_{j-1} + S_j     (X_{-1} = the given state; J steps)
    (4) from earlier chunks  y_{j,s} += Re sum_n w_n z_n^{s+1} X_{j-1,n}         [H, JB, 2N] @ [H, 2N, T]

(complex numbers as stacked real and imaginary parts, so (1), (2), (4) are three real batched
matmuls). Work ``O(L H (T + N))`` and memory ``O(L H)``, i.e. O(L) in the sequence length for a
fixed chunk — against ``O(L log L)`` for the FFT convolution of size ``2L`` — and nothing of size
``N L`` or ``L^2`` is ever built. The strict-future kernel of the bidirectional mode
(``y_l += sum_{m > l} K'_{m-l-1} u_m``, :mod:`..fftconv.fft` eq. (2)) is the same computation run
backwards: its lags ``0 .. T-2`` fill the strictly upper part of the chunk's Toeplitz matrix (one
matmul (1) serves both directions), ``S'_j = sum_t z^t u_{j,t}`` is carried from the last chunk
to the first and adds ``Re sum_n w'_n z_n^{T-1-s} X'_{j+1,n}``. The skip ``D u`` is the lag-0 tap.

Memory: the backward keeps only the input in chunk layout (one ``[H, B L]`` tensor) and the
parameters; the coefficient tables (``[H, T, T]``, two ``[H, T, 2C]``, :class:`_Coef`) and the carried
states ``[H, B J, 2C]`` are rebuilt in the backward (:class:`_DiagChunked`). Plain autograd kept
all of them plus ~18 ``[H, N, T]`` intermediates of the coefficients, an order of magnitude more
memory than the input alone; the coefficient gradients are pulled back by hand, not through an
autograd graph. Forward and backward run over groups of channels, so the carried states and
their gradients are transients of one group and the group size, not ``H``, sets the peak; the
carry (3) is a two-level loop of ~2 sqrt(J) small fused steps, in place (:func:`_scan_`). The
memory figures behind these choices: benchmarks/notes/2026-12-08-docstring-timings.md.

:func:`fir_conv` is the finite-kernel special case (no state): the H3 shift SSM is a causal FIR of
length ``N``, ``y_l = sum_{i < N} k_i u_{l-i}``, i.e. (1) plus the tail of the previous chunk.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..vandermonde.chunk import powers

__all__ = [
    "diag_ssm_chunked",
    "chunked_forward",
    "chunked_backward",
    "fir_conv",
    "fir_chunks",
    "fir_chunks_backward",
    "DEFAULT_CHUNK",
]

DEFAULT_CHUNK = 64
"""Chunk length ``T``: the coefficient matrices grow like ``H T (T + 4N)``, the carried states like
``H (L / T) 4N``; with N/2 = 32 modes T = 64 gave a lower memory peak than T = 128 (the
measurement: benchmarks/notes/2026-12-08-docstring-timings.md)."""


def _toeplitz(k: torch.Tensor, k_back: torch.Tensor | None, T: int) -> torch.Tensor:
    """``M [H, T, T]`` with ``(u @ M)_s = sum_{t<=s} k_{s-t} u_t + sum_{t>s} k_back_{t-s-1} u_t``.

    ``k [H, T]`` (lags 0 .. T-1), ``k_back [H, >= T-1]`` or None (causal).
    """
    back = k.new_zeros(k.shape[0], T - 1) if k_back is None else k_back[:, : T - 1].flip(-1)
    ext = torch.cat([back, k], dim=-1)  # [H, 2T-1], lag 0 at T-1
    return ext.unfold(-1, T, 1).flip(1)  # [H, t, s] = ext[T-1 + s-t]


def _to_chunks(u: torch.Tensor, T: int, front: torch.Tensor | None = None):
    """``u [..., H, L]`` -> ``[H, M, J, T]`` (``M`` = batch, zero-padded at the end; ``front``
    ``[..., H, F]`` is put before ``u``), the work dtype is ``u``'s."""
    H = u.shape[-2]
    uh = u.movedim(-2, 0).reshape(H, -1, u.shape[-1])  # [H, M, L]
    if front is not None:
        uh = torch.cat([front.movedim(-2, 0).reshape(H, -1, front.shape[-1]).to(uh.dtype), uh], dim=-1)
    n = uh.shape[-1]
    J = -(-n // T)
    return F.pad(uh, (0, J * T - n)).contiguous().unflatten(-1, (J, T))


def _from_chunks(y: torch.Tensor, batch: torch.Size, L: int, dtype: torch.dtype) -> torch.Tensor:
    """``[H, M, J, T]`` -> ``[..., H, L]`` (the first ``L`` positions)."""
    H = y.shape[0]
    return y.flatten(-2)[..., :L].reshape(H, *batch, L).movedim(0, -2).to(dtype)


def _blocks(J: int) -> int:
    """Block length ``b`` of :func:`_scan_` for ``J`` chunks: the fewest sequential steps ``(b - 1) +
    (J // b - 1) + J % b`` (inside the blocks, over them, the remainder)."""
    r = math.isqrt(J)
    return min(range(max(1, r // 2), 2 * r + 2), key=lambda b: (b - 1) + (J // b - 1) + J % b)


def _scan_(X: torch.Tensor, a: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """In place along dim 2: ``X_j <- X_j + a X_{j-1}`` for ``j = 1 .. J-1`` in order (``reverse``:
    ``X_j <- X_j + a X_{j+1}`` for ``j = J-2 .. 0``), i.e. the inclusive recurrence started from ``X_0``
    (``X_{J-1}``). ``X [H, M, J, C]`` complex, any strides; ``a [H, C]``. Returns ``X``.

    Two levels, ~``2 sqrt(J)`` sequential steps instead of ``J`` (each step is a small op whose cost is
    mostly its dispatch, so the step count sets the time): the chunks are cut into ``nb`` blocks of
    ``b`` (:func:`_blocks`; a remainder of ``r < b`` chunks at the far end is run last, step by step),
    viewed as ``[H, M, nb, b, C]`` without copying. (i) The recurrence runs inside every block at once
    (``b - 1`` fused multiply-adds on ``[H, M, nb, C]`` slices), the first block exactly, the others
    from a zero start; (ii) the state leaving each block, ``F_m = (end of block m) + a^b F_{m-1}``, is
    carried over the blocks (``nb - 1`` steps); (iii) ``X_{m, i} += a^(i+1) F_{m-1}`` in one broadcast.
    The one-level loop (J steps) was a visible share of H3's fwd+bwd at long lengths; two levels,
    in place (no step-major copy), removed most of it (benchmarks/notes/2026-12-08-docstring-timings.md).
    """
    J = X.shape[2]
    if J < 2:
        return X
    b = _blocks(J)
    nb, r = J // b, J % b
    main = (X[:, :, J - nb * b :] if reverse else X[:, :, : nb * b]).unflatten(2, (nb, b))  # [H, M, nb, b, C]
    ab = a[:, None, None, :]  # [H, 1, 1, C]
    steps = range(b - 2, -1, -1) if reverse else range(1, b)
    for i in steps:  # (i) inside the blocks
        main[:, :, :, i].addcmul_(ab, main[:, :, :, i + 1 if reverse else i - 1])
    if nb > 1:
        pw = torch.cumprod(a.unsqueeze(1).expand(-1, b, -1), dim=1)  # a^(i+1)  [H, b, C]
        ends = main[:, :, :, 0 if reverse else b - 1]  # [H, M, nb, C]
        F_ = torch.empty_like(ends)
        blocks = range(nb - 1, -1, -1) if reverse else range(nb)
        prev = None
        for m in blocks:  # (ii) over the blocks
            if prev is None:
                F_[:, :, m] = ends[:, :, m]
            else:
                torch.addcmul(ends[:, :, m], pw[:, None, b - 1], F_[:, :, prev], out=F_[:, :, m])
            prev = m
        if reverse:  # (iii) a^(steps from the entry)
            main[:, :, :-1].addcmul_(pw.flip(1)[:, None, None], F_[:, :, 1:, None])
        else:
            main[:, :, 1:].addcmul_(pw[:, None, None], F_[:, :, :-1, None])
    tail = range(r - 1, -1, -1) if reverse else range(nb * b, J)
    for j in tail:  # the remainder
        X[:, :, j].addcmul_(a.unsqueeze(1), X[:, :, j + 1 if reverse else j - 1])
    return X


def _carry(S: torch.Tensor, a: torch.Tensor, E0: torch.Tensor | None, nf: int) -> torch.Tensor:
    """Exclusive scan over chunks, (3): ``E_j`` = the state entering chunk ``j``.

    ``S [H, M, J, C]`` complex, ``a [H, C]`` (``z^T``), ``E0 [H, M, nf]`` or None. The first ``nf``
    channels run forwards (``E_0 = E0``, ``E_j = a E_{j-1} + S_{j-1}``), the others backwards
    (``E_{J-1} = 0``, ``E_j = a E_{j+1} + S_{j+1}``): ``S`` shifted by one chunk, then :func:`_scan_`.
    """
    f, b = slice(0, nf), slice(nf, None)
    E = torch.empty_like(S)
    E[:, :, 0, f] = 0 if E0 is None else E0
    E[:, :, 1:, f] = S[:, :, :-1, f]
    _scan_(E[..., f], a[:, f])
    if nf < S.shape[-1]:
        E[:, :, -1, b] = 0
        E[:, :, :-1, b] = S[:, :, 1:, b]
        _scan_(E[..., b], a[:, b], reverse=True)
    return E


def _carry_adjoint(gE: torch.Tensor, a: torch.Tensor, E: torch.Tensor, nf: int):
    """Backward of :func:`_carry` for ``gE = dL/dE``: ``(dS, da, dE0)``.

    The adjoint recurrence (torch's conjugate-Wirtinger convention) ``G_{j-1} = gE_{j-1} + conj(a)
    G_j`` (backwards in time for the forward channels, forwards for the others) gives ``dS_j =
    G_{j+1}`` (``G_{j-1}`` backwards), which obeys the same recurrence on ``gE`` shifted by one chunk:
    ``dS`` comes from one shifted copy and :func:`_scan_`. ``da = sum_j G_j conj(E_{j-1}) = sum_j dS_j
    conj(E_j)`` for both directions; ``dE0 = G_0 = gE_0 + conj(a) dS_0``.
    """
    f, b = slice(0, nf), slice(nf, None)
    ac = a.conj()
    dS = torch.empty_like(gE)
    dS[:, :, -1, f] = 0
    dS[:, :, :-1, f] = gE[:, :, 1:, f]
    _scan_(dS[..., f], ac[:, f], reverse=True)
    if nf < gE.shape[-1]:
        dS[:, :, 0, b] = 0
        dS[:, :, 1:, b] = gE[:, :, :-1, b]
        _scan_(dS[..., b], ac[:, b])
    da = (dS * E.conj()).sum((1, 2))
    return dS, da, torch.addcmul(gE[:, :, 0, f], ac[:, None, f], dS[:, :, 0, f])


class _Coef(NamedTuple):
    """The coefficients of (1)-(4) for a group of ``H`` channels (``C = N`` causal, ``2N``
    bidirectional: forward modes then backward ones), every ``[H, T(+1), .]`` table with the chunk
    position ``t`` before the mode (so that ``[H, T, 2C]`` real views of complex tables are free)."""

    Z: torch.Tensor  # [H, T+1, N] complex, z^t
    A: torch.Tensor  # [H, T, T]   (1), the Toeplitz matrix of K (+ K', D)
    P: torch.Tensor  # [H, T, 2C]  (2), (Re, Im) of z^{T-1-t} (and z^t backwards)
    Qt: torch.Tensor  # [H, T, 2C]  (4) transposed, (Re, -Im) of w z^{t+1} (and w' z^{T-1-t})
    a: torch.Tensor  # [H, C]      (3), z^T


def _coefficients(w, log_z, w_back, D, T) -> _Coef:
    """:class:`_Coef` from ``w, log_z [H, N]``, ``w_back [H, N]`` or None, ``D [H]`` or None: one table
    of powers and one product ``V = w z^t``; ``K_t = Re sum_n V_{t,n}`` (``t < T``) and (4) are read off ``V``."""
    Z = powers(log_z, T + 1, positions_first=True)  # [H, T+1, N]
    V = w.unsqueeze(1) * Z
    sign = torch.tensor([1.0, -1.0], dtype=V.real.dtype, device=V.device)
    k = V.real[:, :T].sum(-1)  # [H, T]
    if D is not None:
        k[:, 0] += D
    P = [torch.view_as_real(Z[:, :T].flip(1))]  # z^{T-1-t}
    Qt = [torch.view_as_real(V[:, 1:]) * sign]  # w z^{t+1}
    k_back = None
    if w_back is not None:
        Vb = w_back.unsqueeze(1) * Z[:, :T]
        k_back = Vb.real[:, : T - 1].sum(-1)
        P.append(torch.view_as_real(Z[:, :T]))  # z^t
        Qt.append(torch.view_as_real(Vb.flip(1)) * sign)  # w' z^{T-1-t}
    a = Z[:, T].repeat(1, len(P))
    P, Qt = (t[0] if len(t) == 1 else torch.cat(t, dim=2) for t in (P, Qt))  # [H, T, C, 2]
    return _Coef(Z, _toeplitz(k, k_back, T), P.flatten(2), Qt.flatten(2), a)


def _coefficients_backward(cf: _Coef, w, w_back, has_D, dext, gQt, gP, ga, need_log_z):
    """Pull the gradients of the coefficients back onto ``(w, log_z, w_back, D)``: ``dext [H, 2T-1]``
    (of the Toeplitz taps, lag 0 at ``T-1``, :func:`_diagonal_sums`), ``gQt, gP [H, T, 2C]`` and
    ``ga [H, C]`` (None when (2)-(4) were not used). torch's convention for complex leaves
    (``d/dRe + i d/dIm``): ``V = w Z`` gives ``dw = sum_t dV conj(Z)``, ``dZ = dV conj(w)``; ``Z_t =
    exp(t log z)`` gives ``d log z = sum_t t conj(Z_t) dZ_t`` (by hand: autograd through the powers
    held ~8 ``[H, N, T]`` temporaries)."""
    Z = cf.Z
    T = Z.shape[1] - 1
    N = Z.shape[2]
    gV = torch.zeros_like(Z)  # d V = d (w z^t)
    gV[:, :T] += dext[:, T - 1 :].unsqueeze(-1)  # K_t = Re sum_n V_t
    if gQt is not None:  # (Re, -Im) V_{t+1}
        gV[:, 1:] += torch.view_as_complex(gQt[..., : 2 * N].unflatten(-1, (N, 2))).conj()
    gw = (gV * Z.conj()).sum(1)
    gZ = gV.mul_(w.conj().unsqueeze(1))
    gwb = None
    if w_back is not None:  # V' = w' z^t, t < T
        gVb = torch.zeros_like(Z[:, :T])
        gVb[:, : T - 1] += dext[:, : T - 1].flip(-1).unsqueeze(-1)
        if gQt is not None:
            gVb += torch.view_as_complex(gQt[..., 2 * N :].unflatten(-1, (N, 2))).conj().flip(1)
        gwb = (gVb * Z[:, :T].conj()).sum(1)
        gZ[:, :T] += gVb.mul_(w_back.conj().unsqueeze(1))
    if gP is not None:  # P = (Re, Im) Z
        gPc = torch.view_as_complex(gP.unflatten(-1, (-1, 2)))  # [H, T, C]
        gZ[:, :T] += gPc[..., :N].flip(1)
        if w_back is not None:
            gZ[:, :T] += gPc[..., N:]
        gZ[:, T] += ga[:, :N] if w_back is None else ga[:, :N] + ga[:, N:]
    gD = dext[:, T - 1].clone() if has_D else None
    glz = None
    if need_log_z:
        t = torch.arange(T + 1, device=Z.device, dtype=Z.real.dtype)
        glz = (gZ.mul_(Z.conj()) * t.unsqueeze(-1)).sum(1)
    return gw, glz, gwb, gD


def _diagonal_sums(R: torch.Tensor) -> torch.Tensor:
    """``R [H, P, T]`` -> ``[H, P + T - 1]``: entry ``i`` sums the diagonal ``p - s = i - (T - 1)``,
    through one strided view of ``R`` padded with ``T - 1`` zero rows on each side."""
    H, P, T = R.shape
    buf = F.pad(R, (0, 0, T - 1, T - 1))  # [H, P + 2T - 2, T]
    n = P + T - 1
    return buf.as_strided((H, n, T), (buf.stride(0), T, T + 1)).sum(-1)  # [h, a, s] = buf[s + a, s]


def _as_real(E: torch.Tensor) -> torch.Tensor:
    """``[H, M, J, C]`` complex -> ``[H, M J, 2C]`` real (a view)."""
    return torch.view_as_real(E).flatten(-2).flatten(1, 2)


def _as_complex(S: torch.Tensor, M: int) -> torch.Tensor:
    """``[H, M J, 2C]`` real -> ``[H, M, J, C]`` complex (a view)."""
    return torch.view_as_complex(S.unflatten(-1, (-1, 2)).unflatten(1, (M, -1)))


def _group_size(H: int, rows: int, cols: int) -> int:
    """Channels per group: ~4 MB (float32) for each ``[g, rows, cols]`` transient (carried states,
    their gradients), so the per-group buffers, not ``H`` times them, set the memory peak."""
    return max(1, min(H, (1 << 20) // max(1, rows * cols)))


def chunked_forward(ub, w, log_z, w_back, D, E0, M, T, out=None):
    """(1)-(4) for one group of channels, ``ub [g, M J, T]`` (``M`` sequences of ``J`` chunks),
    ``w, log_z [g, N]``, ``w_back [g, N]`` or None, ``D [g]`` or None, ``E0 [g, M, N]`` or None:
    ``(y [g, M J, T], state entering the last chunk [g, M, N])``; ``y`` is written into ``out``
    (contiguous) when given. No autograd graph (the caller's backward is :func:`chunked_backward`)."""
    H, N = log_z.shape
    J = ub.shape[1] // M
    cf = _coefficients(w, log_z, w_back, D, T)
    y = torch.bmm(ub, cf.A, out=out)  # (1)
    E_last = torch.zeros(H, M, N, dtype=cf.Z.dtype, device=ub.device) if E0 is None else E0
    if J > 1 or E0 is not None:
        E = _carry(_as_complex(torch.bmm(ub, cf.P), M), cf.a, E0, N)  # (2), (3)
        y.baddbmm_(_as_real(E), cf.Qt.transpose(1, 2))  # (4)
        E_last = E[:, :, J - 1, :N].clone()
    return y, E_last


def chunked_backward(ub, w, log_z, w_back, D, E0, gy, gE_last, M, T, need_log_z, want_y=False):
    """Gradients of :func:`chunked_forward` for one group of channels:
    ``(du, dw, dlog_z, dw_back, dD, dE0, y)``; ``want_y``: also the forward's ``y`` (else None),
    from the coefficient matrices and states the backward rebuilds anyway. The coefficients'
    gradients are pulled back by hand (:func:`_coefficients_backward`), not through autograd."""
    H, N = log_z.shape
    J = ub.shape[1] // M
    cf = _coefficients(w, log_z.detach(), w_back, D, T)
    du = torch.bmm(gy, cf.A.transpose(1, 2))  # (1)
    y = torch.bmm(ub, cf.A) if want_y else None
    dext = _diagonal_sums(torch.bmm(ub.transpose(1, 2), gy)).flip(-1)  # d taps, lag 0 at T-1
    gQt = gP = ga = dE0 = None
    if J > 1 or E0 is not None:
        E = _carry(_as_complex(torch.bmm(ub, cf.P), M), cf.a, E0, N)  # (2), (3) again
        Er = _as_real(E)
        if want_y:
            y.baddbmm_(Er, cf.Qt.transpose(1, 2))
        gQt = torch.bmm(gy.transpose(1, 2), Er)  # (4)  [H, T, 2C]
        dE = _as_complex(torch.bmm(gy, cf.Qt), M)
        dE[:, :, J - 1, :N] += gE_last
        dS, ga, dE0 = _carry_adjoint(dE, cf.a, E, N)  # (3)
        del dE, E, Er
        dS = _as_real(dS)
        du.baddbmm_(dS, cf.P.transpose(1, 2))  # (2)
        gP = torch.bmm(ub.transpose(1, 2), dS)  # [H, T, 2C]
        if E0 is None:
            dE0 = None
    gw, glz, gwb, gD = _coefficients_backward(cf, w, w_back, D is not None, dext, gQt, gP, ga, need_log_z)
    return du, gw, glz, gwb, gD, dE0, y


class _DiagChunked(torch.autograd.Function):
    """(1)-(4) on ``ub [H, M J, T]``, keeping only ``ub`` and the parameters for the backward.

    Everything else — the coefficient tables (:class:`_Coef`), the states ``E`` — is rebuilt in the
    backward (the coefficients from ``Z = z^t``, the states by one matmul and the carry). The
    coefficient gradients are pulled back onto ``w``, ``log z``, ``w'``, ``D`` by hand
    (:func:`_coefficients_backward`: the tables are rearrangements of ``Z`` and products ``w Z``), so
    no autograd graph is built. Channels are independent: forward and backward run over groups
    of channels (:func:`_group_size`), so the carried states and their gradients (``[g, M J, 2C]``
    complex) are transients of one group, not of all ``H``. Outputs ``y [H, M J, T]`` and the state
    entering the last chunk ``[H, M, N]``.
    """

    @staticmethod
    def forward(ctx, ub, w, log_z, w_back, D, E0, M, T):
        H, N = log_z.shape
        g = _group_size(H, ub.shape[1], 2 * N * (1 if w_back is None else 2))
        y = torch.empty_like(ub)
        E_last = ub.new_empty(H, M, N, dtype=log_z.dtype)
        for c in (slice(h, h + g) for h in range(0, H, g)):
            _, E_last[c] = chunked_forward(ub[c], w[c], log_z[c], _at(w_back, c), _at(D, c), _at(E0, c), M, T, out=y[c])
        ctx.save_for_backward(ub, w, log_z, w_back, D, E0)
        ctx.M, ctx.T, ctx.g = M, T, g
        return y, E_last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gE_last):
        ub, w, log_z, w_back, D, E0 = ctx.saved_tensors
        H = log_z.shape[0]
        gy = gy.contiguous()
        if gE_last is None:
            gE_last = torch.zeros(H, ctx.M, log_z.shape[1], dtype=log_z.dtype, device=ub.device)
        grads = [torch.empty_like(ub), torch.empty_like(w), torch.empty_like(log_z), _like(w_back), _like(D), _like(E0)]
        for c in (slice(h, h + ctx.g) for h in range(0, H, ctx.g)):
            parts = chunked_backward(
                ub[c],
                w[c],
                log_z[c],
                _at(w_back, c),
                _at(D, c),
                _at(E0, c),
                gy[c],
                gE_last[c],
                ctx.M,
                ctx.T,
                ctx.needs_input_grad[2],
            )[:6]
            for out, part in zip(grads, parts):
                if out is not None and part is not None:
                    out[c] = part
        if not ctx.needs_input_grad[2]:
            grads[2] = None
        return (*grads, None, None)


def _at(t: torch.Tensor | None, c: slice) -> torch.Tensor | None:
    return None if t is None else t[c]


def _like(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else torch.empty_like(t)


def diag_ssm_chunked(
    u: torch.Tensor,
    w: torch.Tensor,
    log_z: torch.Tensor,
    *,
    w_back: torch.Tensor | None = None,
    D: torch.Tensor | None = None,
    state: torch.Tensor | None = None,
    return_state: bool = False,
    chunk: int = DEFAULT_CHUNK,
):
    """The diagonal SSM by (1)-(4): ``u [..., H, L]`` real, ``w, log_z [H, N]`` complex.

    ``w_back [H, N]``: bidirectional, adds the strict-future kernel ``K'_m = Re sum_n w'_n z_n^m``
    (no state then). ``D [H]``: skip ``+ D u``. ``state [..., H, N]``: ``x_{-1}`` (None = zero).
    Returns ``(y [..., H, L], x_{L-1} [..., H, N] or None)``; computed in ``log_z``'s real dtype.
    """
    if w_back is not None and (state is not None or return_state):
        raise ValueError("diag_ssm_chunked: a state needs the causal form (w_back=None)")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    *batch, H, L = u.shape
    N = log_z.shape[-1]
    T = min(chunk, L)
    uc = _to_chunks(u.to(log_z.real.dtype), T)  # [H, M, J, T]
    M, J = uc.shape[1], uc.shape[2]
    ub = uc.flatten(1, 2)  # [H, M J, T]

    E0 = None if state is None else state.movedim(-2, 0).reshape(H, M, N).to(log_z.dtype)
    Dw = None if D is None else D.to(uc.dtype)
    y, E_last = _DiagChunked.apply(ub, w, log_z, w_back, Dw, E0, M, T)
    new_state = None
    if return_state:  # x_{L-1}: last (partial) chunk
        Tc = L - (J - 1) * T
        P = torch.view_as_real(powers(log_z, Tc, positions_first=True).flip(-2)).flatten(-2)  # z^{Tc-1-t} [H, Tc, 2N]
        x = torch.view_as_complex(torch.bmm(uc[:, :, J - 1, :Tc], P).unflatten(-1, (N, 2)))  # [H, M, N]
        x = x + torch.exp(log_z * Tc).unsqueeze(1) * E_last
        new_state = x.reshape(H, *batch, N).movedim(0, -2)
    return _from_chunks(y.unflatten(1, (M, J)), torch.Size(batch), L, u.dtype), new_state


def _fir_matrices(k: torch.Tensor, T: int):
    """The two ``[H, T, T]`` matrices of a causal FIR ``k [H, n]`` (``n <= T``) on chunks of ``T``:
    ``y_j = u_j @ low + u_{j-1} @ up`` — lags ``s - t`` inside the chunk, ``s + T - t`` (``t > s``)
    from the previous one."""
    kT = F.pad(k, (0, T - k.shape[-1]))
    return _toeplitz(kT, None, T), _toeplitz(torch.zeros_like(kT), kT.flip(-1), T)


def fir_chunks(uc: torch.Tensor, k: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Causal FIR ``y_l = sum_{i < n} k_i u_{l-i}`` on ``uc [H, M, J, T]`` (``M`` sequences of ``J``
    chunks, zero before each), ``k [H, n]``, ``n <= T`` -> ``[H, M, J, T]`` (written into ``out``, a
    contiguous tensor of that shape, when given): two batched matmuls."""
    H, M, J, T = uc.shape
    low, up = _fir_matrices(k.to(uc.dtype), T)
    y = torch.bmm(uc.reshape(H, M * J, T), low, out=None if out is None else out.view(H, M * J, T)).view(H, M, J, T)
    if J > 1:
        y[:, :, 1:] += torch.matmul(uc[:, :, :-1], up.unsqueeze(1))
    return y


def fir_chunks_backward(uc: torch.Tensor, k: torch.Tensor, gc: torch.Tensor, out: torch.Tensor | None = None):
    """Gradients of :func:`fir_chunks` for the output gradient ``gc [H, M, J, T]``: ``(du, dk)``
    (``du`` written into ``out`` when given, a contiguous ``[H, M, J, T]`` tensor; it may be ``uc``
    itself, which is read before ``du`` is written).

    ``du`` is the anti-causal FIR of ``gc`` (the transposed matrices, the next chunk's part).
    ``dk_i = sum_l g_l u_{l-i}``: ``R = [u_{j-1}; u_j]^T g_j`` summed over chunks (``[H, 2T, T]``,
    row ``p`` = position ``p - T`` relative to the chunk) holds lag ``s + T - p`` at ``(p, s)``; the
    lags ``0 .. T-1`` are its diagonals ``p - s = T - i`` (:func:`_diagonal_sums`).
    """
    H, M, J, T = uc.shape
    n = k.shape[-1]
    low, up = _fir_matrices(k.to(uc.dtype), T)
    g = gc.reshape(H, M * J, T)
    r_cur = torch.bmm(uc.reshape(H, M * J, T).transpose(1, 2), g)  # [H, T, T]
    if J > 1:
        r_prev = torch.matmul(uc[:, :, :-1].transpose(-1, -2), gc[:, :, 1:]).sum(1)
    else:
        r_prev = torch.zeros_like(r_cur)
    sums = _diagonal_sums(torch.cat([r_prev, r_cur], dim=1))  # [H, 3T-1]
    dk = sums[:, T : 2 * T].flip(-1)[:, :n].to(k.dtype)  # lag s + T - p at 2T-1-lag
    du = torch.bmm(g, low.transpose(1, 2), out=None if out is None else out.view(H, M * J, T)).view(H, M, J, T)
    if J > 1:
        du[:, :, :-1] += torch.matmul(gc[:, :, 1:], up.transpose(1, 2).unsqueeze(1))
    return du, dk


class _FIR(torch.autograd.Function):
    """:func:`fir_chunks` with :func:`fir_chunks_backward` (keeps only its inputs)."""

    @staticmethod
    def forward(ctx, uc, k):
        ctx.save_for_backward(uc, k)
        return fir_chunks(uc, k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        uc, k = ctx.saved_tensors
        return fir_chunks_backward(uc, k, g.contiguous())


def fir_conv(u: torch.Tensor, k: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Causal FIR ``y_l = sum_{i < n} k_i u_{l-i}``: ``u [..., H, L]``, ``k [H, n]`` -> ``[..., H, L]``.

    ``prev [..., H, n-1]``: the inputs before ``u`` (None = zeros). Chunks of ``T = n`` positions
    with one chunk before ``u`` holding ``prev`` (:func:`fir_chunks`), O(L n) work.
    """
    *batch, H, L = u.shape
    T = k.shape[-1]
    front = u.new_zeros(*batch, H, T if prev is None else 1)  # a chunk before u
    if prev is not None:
        front = torch.cat([front, prev.to(u.dtype)], dim=-1)
    uc = _to_chunks(u, T, front)  # [H, M, J+1, T]
    y = _FIR.apply(uc, k.to(u.dtype))[:, :, 1:]
    return _from_chunks(y, torch.Size(batch), L, u.dtype)
