"""Cauchy kernels of S4 at the roots of unity.

S4 (Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with Structured State Spaces",
Section 3.3, Lemma C.3 and Algorithm 1) reduces the SSM generating function at the L-th roots
of unity to four Cauchy sums ``Σ_n v_n / (z_k - λ_n)`` followed by a Woodbury correction.

Here every Cauchy sum is over conjugate pairs of states (the state space is real, so the states
``N/2..N-1`` are the conjugates of ``0..N/2-1``) and, in the form used by :mod:`longseq.mixers.s4`,
at the points ``ω_k = exp(-2πi k / L)``::

    r_v(ω) = Δ Σ_n [ v_n / ((1-ω) - (1+ω) μ_n) + conj(v_n) / ((1-ω) - (1+ω) conj(μ_n)) ],
    μ_n = Δ λ_n / 2                                                                   (C1)

(``Δ / ((1-ω) - (1+ω)μ) = 1 / ((1-ω)/Δ - (1+ω)λ/2)``: the S4 resolvent ``(g(ω) - λ)^{-1}``
times ``(1+ω)/2``, written so that ``ω = -1`` is not a singular point.)

Fast evaluation (:func:`cauchy_roots_of_unity`). With ``ā = (1+μ)/(1-μ)`` (``|ā| < 1`` when
``Re λ < 0``), ``1/((1-ω) - (1+ω)μ) = ā / ((1+μ)(1 - āω)) = Σ_j ā^j ω^j / (1-μ)``, and on the
L-th roots of unity ``ω^L = 1`` folds the series to length L::

    1/((1-ω) - (1+ω)μ) = Σ_{m<L} ω^m ā^m / ((1-μ)(1-ā^L))

so the Cauchy sums at all L roots are the DFT of a real length-L sequence
``g_m = 2 Re Σ_n W_n ā_n^m``, ``W_n = v_n / ((1-μ_n)(1-ā_n^L))``: the Cauchy matrix at the roots
of unity factors exactly as (DFT) x (Vandermonde). The Vandermonde product is done as a batched
matrix product over chunks ``m = iT + j`` (``ā^m = ā^{iT} ā^j``), so only ``O(N (L/T + T))``
complex exponentials are formed, and the ``O(N L)`` work runs in a real GEMM; one rfft then
gives all ``L//2 + 1`` frequencies. Exact (no truncation); ``ā^L`` and ``1 - ā^L`` use
``exp``/``expm1`` of ``L log ā`` (``log ā = 2 atanh μ``).

:func:`cauchy_naive` is the direct O(N L) sum, for tests.

Woodbury kernel (:func:`woodbury_irfft`). S4's kernel is ``K = irfft(R_a - R_b s R_c / (1 + s R_d))``
with ``s = (1+ω)/2`` and four such sums ``R_x = rfft(g_x)``. Plain autograd of that expression
keeps half a dozen complex ``[.., H, L/2+1]`` intermediates and differentiates ``rfft`` with
padded complex-to-complex FFTs. :class:`_WoodburyIrfft` saves only ``R_b``, ``R_c`` and
``e = s / (1 + s R_d)`` and back-propagates with one rfft of the incoming gradient and one irfft
per input: for the real pair ``g -> rfft -> (elementwise, holomorphic) -> irfft -> k`` the
``1/L`` and doubled-bin weights of the adjoints of ``irfft`` and ``rfft`` cancel exactly, so
``dg_x = irfft(conj(∂K̂/∂R_x) rfft(dk))``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cauchy_naive", "cauchy_roots_of_unity", "cauchy_sequences", "roots_of_unity", "vandermonde_real",
           "woodbury_irfft"]


def roots_of_unity(L: int, dtype=torch.complex64, device=None) -> torch.Tensor:
    """``ω_k = exp(-2πi k / L)`` for ``k = 0..L//2`` (the rfft frequencies) ``[L//2 + 1]``."""
    k = torch.arange(L // 2 + 1, device=device, dtype=torch.float64)
    return torch.polar(torch.ones_like(k), -2 * math.pi * k / L).to(dtype)


def cauchy_naive(v: torch.Tensor, mu: torch.Tensor, dt: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """(C1) summed directly: ``v [..., H, N2]``, ``mu [H, N2]``, ``dt [H]``, ``omega [F]`` -> ``[..., H, F]``."""
    a, b = (1 - omega), (1 + omega)  # [F]
    d1 = a - b * mu[..., None]  # [H, N2, F]
    d2 = a - b * mu.conj()[..., None]
    r = (v[..., None] / d1 + v.conj()[..., None] / d2).sum(-2)
    return dt[:, None] * r


def _powers(log_a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``ā^m = exp(m log ā)`` for ``log_a [H, N2]`` complex, ``m [M]`` real -> ``[H, N2, M]`` (real exp, cos, sin)."""
    r, phi = torch.exp(log_a.real[..., None] * m), log_a.imag[..., None] * m
    return torch.complex(r * phi.cos(), r * phi.sin())  # = torch.polar(r, phi), which is ~2x slower on CPU


class _VandermondeReal(torch.autograd.Function):
    """:func:`vandermonde_real` with a hand-written backward that keeps only ``W`` and ``log ā``.

    Forward, per channel, one real GEMM ``G = X Y`` over all ``S`` sequences at once:
    ``X[(s, i)] = 2 W_s ā^{iT}`` (``[S n, N2]`` complex read as ``[S n, 2 N2]`` real ``(Re, Im)``
    pairs) and ``Y[(k, Re/Im), j] = (Re ā_k^j, -Im ā_k^j)``, so
    ``G[(s, i), j] = 2 Re Σ_k W_{s,k} ā_k^{iT+j}``. Backward rebuilds the small ``X, Y`` and runs
    ``dX = dG Y^T``, ``dY = X^T dG`` (the GEMMs autograd would run), then the holomorphic chain
    rule in PyTorch's convention: ``dW_s = Σ_i conj(2 E_i) dX_{s,i}``, ``dE = Σ_s conj(2 W_s) dX_s``,
    ``d log ā = Σ_m m conj(ā^m) d(ā^m)`` for ``E_i = ā^{iT}`` and ``ā^j``.
    """

    @staticmethod
    def _factors(W, log_a, L, T):
        n = -(-L // T)
        i = torch.arange(n, device=log_a.device, dtype=log_a.real.dtype) * T
        j = torch.arange(T, device=log_a.device, dtype=log_a.real.dtype)
        P = _powers(log_a, j)                                             # ā^j  [H, N2, T]
        Y = torch.stack([P.real, -P.imag], -2).flatten(-3, -2)             # [H, 2 N2, T]
        E = (2 * _powers(log_a, i)).transpose(-1, -2).unsqueeze(1)        # 2 ā^{iT}  [H, 1, n, N2]
        X = W.transpose(0, 1).contiguous().unsqueeze(2) * E               # [H, S, n, N2]
        return i, j, n, P, Y, E, X

    @staticmethod
    def forward(ctx, W, log_a, L, T):
        S, H, N2 = W.shape
        _, _, n, _, Y, _, X = _VandermondeReal._factors(W, log_a, L, T)
        g = torch.bmm(torch.view_as_real(X).reshape(H, S * n, 2 * N2), Y)  # [H, S n, T]
        ctx.save_for_backward(W, log_a)
        ctx.L, ctx.T = L, T
        return g.view(H, S, n * T)[..., :L].transpose(0, 1)               # [S, H, L] (a view)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dg):
        W, log_a = ctx.saved_tensors
        L, T = ctx.L, ctx.T
        S, H, N2 = W.shape
        i, j, n, P, Y, E, X = _VandermondeReal._factors(W, log_a, L, T)
        dg = dg if n * T == L else torch.nn.functional.pad(dg, (0, n * T - L))
        dG = dg.transpose(0, 1).reshape(H, S * n, T)
        dY = torch.bmm(torch.view_as_real(X).reshape(H, S * n, 2 * N2).transpose(-1, -2), dG)  # [H, 2 N2, T]
        dX = torch.view_as_complex(torch.bmm(dG, Y.transpose(-1, -2)).view(H, S, n, N2, 2))   # [H, S, n, N2]
        dW = (dX * E.conj()).sum(-2).transpose(0, 1)                      # [S, H, N2]
        dE = (W.transpose(0, 1).unsqueeze(2).conj() * dX).sum(1)          # [H, n, N2]
        dY = dY.unflatten(-2, (N2, 2))
        dP = torch.complex(dY[..., 0, :], -dY[..., 1, :])                  # [H, N2, T]
        dlog_a = (P.conj() * dP) @ j.to(P.dtype) + i.to(E.dtype) @ (E[:, 0].conj() * dE)
        return dW, dlog_a, None, None


def vandermonde_real(W: torch.Tensor, log_a: torch.Tensor, L: int, chunk: int | None = None) -> torch.Tensor:
    """``g_m = 2 Re Σ_n W_n exp(m log_a_n)`` for ``m < L``: ``W [..., H, N2]``, ``log_a [H, N2]`` -> ``[..., H, L]``.

    Chunked: ``m = iT + j``, ``ā^m = ā^{iT} ā^j``; per sequence one batched real GEMM
    ``[H, n_chunks, 2 N2] @ [H, 2 N2, T]`` (complex numbers as ``(Re, Im)`` pairs), so only
    ``O(N (L/T + T))`` powers are formed (:class:`_VandermondeReal`, which keeps only ``W`` and
    ``log_a`` for backward).
    """
    T = chunk or max(8, 1 << math.ceil(math.log2(max(L, 1)) / 2))  # ~sqrt(L)
    T = min(T, L)
    lead, (H, N2) = W.shape[:-2], W.shape[-2:]
    g = _VandermondeReal.apply(W.reshape(-1, H, N2).contiguous(), log_a.contiguous(), L, T)
    return g.reshape(*lead, H, L)


def cauchy_sequences(v: torch.Tensor, mu: torch.Tensor, dt: torch.Tensor, L: int) -> torch.Tensor:
    """Real ``g [..., H, L]`` whose ``rfft(g, n=L)`` is (C1) at ``ω_k = exp(-2πi k/L)``, ``k = 0..L//2``.

    ``v [..., H, N2]`` complex, ``mu [H, N2]`` complex with ``Re mu < 0``, ``dt [H]``.
    """
    log_a = 2 * torch.atanh(mu)                                           # log ā  [H, N2]
    W = v * (dt[:, None] / ((1 - mu) * -torch.expm1(L * log_a)))          # [..., H, N2]
    return vandermonde_real(W, log_a, L)                                  # [..., H, L]


def cauchy_roots_of_unity(v: torch.Tensor, mu: torch.Tensor, dt: torch.Tensor, L: int) -> torch.Tensor:
    """(C1) at ``ω_k = exp(-2πi k/L)``, ``k = 0..L//2``: ``rfft`` of :func:`cauchy_sequences` ``[..., H, L//2+1]``."""
    return torch.fft.rfft(cauchy_sequences(v, mu, dt, L), n=L)


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to ``shape`` (same number of dims or fewer leading ones)."""
    while t.dim() > len(shape):
        t = t.sum(0)
    dims = [i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1]
    return t.sum(dims, keepdim=True) if dims else t


class _WoodburyIrfft(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ga, gb, gc, gd, L):
        Rb, Rc, Rd = (torch.fft.rfft(g, n=L) for g in (gb, gc, gd))       # [., H, L//2+1]
        s = (1 + roots_of_unity(L, Rb.dtype, Rb.device)) / 2
        e = s / (1 + s * Rd)
        ctx.save_for_backward(Rb, Rc, e)
        ctx.L, ctx.shapes = L, (ga.shape, gb.shape, gc.shape, gd.shape)
        return torch.fft.irfft(torch.fft.rfft(ga, n=L) - Rb * (Rc * e), n=L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dk):
        Rb, Rc, e = ctx.saved_tensors
        G = torch.fft.rfft(dk, n=ctx.L)                                   # dK̂
        q = Rc * e                                                        # s R_c / (1 + s R_d)
        m = G * Rb.conj()                                                 # -dq
        # dR_a, dR_b, -dR_c, dR_d (signs on the smaller, unbroadcast factors; dg_c negated after irfft)
        grads = (G, G * (-q).conj(), m * e.conj(), m * (q * e).conj())
        dg = [torch.fft.irfft(_sum_to(g, shape[:-1] + (g.shape[-1],)), n=ctx.L) for g, shape in zip(grads, ctx.shapes)]
        dg[2].neg_()
        return (*dg, None)


def woodbury_irfft(ga: torch.Tensor, gb: torch.Tensor, gc: torch.Tensor, gd: torch.Tensor, L: int) -> torch.Tensor:
    """``irfft(R_a - R_b s R_c / (1 + s R_d), n=L)`` with ``R_x = rfft(g_x, n=L)``, ``s = (1+ω)/2``.

    Real ``g_x [..., H, L]`` broadcastable against each other -> real ``[..., H, L]``.
    """
    return _WoodburyIrfft.apply(ga, gb, gc, gd, L)
