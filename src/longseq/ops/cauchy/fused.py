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
gives all ``L//2 + 1`` frequencies (:func:`longseq.ops.vandermonde.chunk.vandermonde`). Exact (no
truncation); ``ā^L`` and ``1 - ā^L`` use ``exp``/``expm1`` of ``L log ā`` (``log ā = 2 atanh μ``).

:func:`.naive.cauchy_naive` is the direct O(N L) sum.

Woodbury kernel (:func:`woodbury_irfft`). S4's kernel is ``K = irfft(R_a - R_b s R_c / (1 + s R_d))``
with ``s = (1+ω)/2`` and four such sums ``R_x = rfft(g_x)``. Plain autograd of that expression
keeps half a dozen complex ``[.., H, L/2+1]`` intermediates and differentiates ``rfft`` with
padded complex-to-complex FFTs. :class:`_WoodburyIrfft` saves only ``R_b``, ``R_c`` and
``e = s / (1 + s R_d)``. ``R_a`` enters linearly and ``irfft(rfft(g_a)) = g_a`` for length-L
sequences, so ``K = g_a - irfft(R_b s R_c / (1 + s R_d))`` and ``dg_a = dK``: ``g_a`` (one row per
direction) is never transformed. The backward uses one rfft of the incoming gradient and one
irfft per other input: for the real pair ``g -> rfft -> (elementwise, holomorphic) -> irfft -> k`` the
``1/L`` and doubled-bin weights of the adjoints of ``irfft`` and ``rfft`` cancel exactly, so
``dg_x = irfft(conj(∂K̂/∂R_x) rfft(dk))``.
"""

from __future__ import annotations

import math

import torch

from ..vandermonde.chunk import vandermonde

__all__ = ["cauchy_roots_of_unity", "cauchy_sequences", "roots_of_unity", "vandermonde_real", "woodbury_irfft"]


def roots_of_unity(L: int, dtype=torch.complex64, device=None) -> torch.Tensor:
    """``ω_k = exp(-2πi k / L)`` for ``k = 0..L//2`` (the rfft frequencies) ``[L//2 + 1]``."""
    k = torch.arange(L // 2 + 1, device=device, dtype=torch.float64)
    return torch.polar(torch.ones_like(k), -2 * math.pi * k / L).to(dtype)


def vandermonde_real(W: torch.Tensor, log_a: torch.Tensor, L: int) -> torch.Tensor:
    """``g_m = 2 Re Σ_n W_n exp(m log_a_n)`` for ``m < L``: ``W [..., H, N2]``, ``log_a [H, N2]`` -> ``[..., H, L]``
    (:func:`longseq.ops.vandermonde.chunk.vandermonde`: chunked real matmuls, a backward keeping only
    ``W`` and ``log_a``)."""
    return vandermonde(2 * W, log_a, L)


def cauchy_sequences(v: torch.Tensor, mu: torch.Tensor, dt: torch.Tensor, L: int) -> torch.Tensor:
    """Real ``g [..., H, L]`` whose ``rfft(g, n=L)`` is (C1) at ``ω_k = exp(-2πi k/L)``, ``k = 0..L//2``.

    ``v [..., H, N2]`` complex, ``mu [H, N2]`` complex with ``Re mu < 0``, ``dt [H]``.
    """
    log_a = 2 * torch.atanh(mu)  # log ā  [H, N2]
    W = v * (dt[:, None] / ((1 - mu) * -torch.expm1(L * log_a)))  # [..., H, N2]
    return vandermonde_real(W, log_a, L)  # [..., H, L]


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
        if ga.shape[-1] != L:
            raise ValueError(f"woodbury_irfft: the sequences must have length L={L}, got {ga.shape[-1]}")
        Rb, Rc, Rd = (torch.fft.rfft(g, n=L) for g in (gb, gc, gd))  # [., H, L//2+1]
        s = (1 + roots_of_unity(L, Rb.dtype, Rb.device)) / 2
        e = s / (1 + s * Rd)
        ctx.save_for_backward(Rb, Rc, e)
        ctx.L, ctx.shapes = L, (ga.shape, gb.shape, gc.shape, gd.shape)
        return ga - torch.fft.irfft(Rb * (Rc * e), n=L)  # irfft(rfft(g_a)) = g_a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dk):
        Rb, Rc, e = ctx.saved_tensors
        G = torch.fft.rfft(dk, n=ctx.L)  # dK̂
        q = Rc * e  # s R_c / (1 + s R_d)
        m = G * Rb.conj()  # -dq
        # dR_b, -dR_c, dR_d (signs on the smaller, unbroadcast factors; dg_c negated after irfft); dg_a = dk
        grads = (G * (-q).conj(), m * e.conj(), m * (q * e).conj())
        dg = [
            torch.fft.irfft(_sum_to(g, shape[:-1] + (g.shape[-1],)), n=ctx.L) for g, shape in zip(grads, ctx.shapes[1:])
        ]
        dg[1].neg_()
        return (_sum_to(dk, ctx.shapes[0]), *dg, None)


def woodbury_irfft(ga: torch.Tensor, gb: torch.Tensor, gc: torch.Tensor, gd: torch.Tensor, L: int) -> torch.Tensor:
    """``irfft(R_a - R_b s R_c / (1 + s R_d), n=L)`` with ``R_x = rfft(g_x, n=L)``, ``s = (1+ω)/2``.

    Real ``g_x [..., H, L]`` broadcastable against each other -> real ``[..., H, L]``.
    """
    return _WoodburyIrfft.apply(ga, gb, gc, gd, L)
