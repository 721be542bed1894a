"""The Vandermonde product of diagonal SSMs in real arithmetic, with a backward that saves nothing.

Every diagonal kernel of :mod:`longseq.ssm` (S4D, DSS, GSS's shared-mode DSS, S4's folded Cauchy
sums, the state a block leaves behind) is a Vandermonde product (S4D Section 3.2, eq. (6))::

    K[..., l] = Re sum_n w[..., n] z_n^l,        l = 0 .. L-1                             (1)

with ``z_n = exp(log z_n)``, ``|z_n| <= 1``. Materialising ``z^l`` as a complex ``[H, N, L]``
tensor costs ``O(H N L)`` memory and autograd keeps it: 1 GB per copy at L = 16K, H = 256,
N = 32. Instead ``l = j T + t`` with ``T ~ sqrt(rows L)``::

    K[..., j, t] = Re sum_n (w_n z_n^{jT}) z_n^t                                          (2)

a real (batched) matmul ``[rows J, 2N] @ [2N, T]`` over the powers ``z^t`` (complex numbers as
interleaved real and imaginary parts), so only ``O(N (rows J + T))`` powers are formed.

* Modes are either per channel (``log_z [H, N]``, S4D/DSS: a batched matmul over channels) or
  shared by every channel (``log_z [N]``, GSS: one matmul over all rows).
* Chunks in which a mode has decayed below ``e^-70`` (``|z|^{jT} < 4e-31``, below float64
  resolution of any kernel value) are skipped (:func:`_plan`): at GSS's random init almost every
  mode is gone after a few hundred lags, so a 16K kernel costs about one chunk; slow modes are
  kept to the end (the full ``O(rows N L)`` in the worst case).
* :class:`_Vandermonde` saves only ``w`` and ``log z``; the backward rebuilds the powers
  (``O(N (rows J + T))`` elementwise work) and runs the two transposed matmuls.
* Powers are ``exp(l log z)`` (or the product of two such, :func:`powers`), never repeated
  products, so they do not drift; the phases ``l Im log z`` (up to ~1e5 at L = 16K, where float32
  has lost the angle) are formed in float64 and reduced modulo 2π before the cosine and sine.

:func:`vandermonde_transposed` is the adjoint product, the state after a block of inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["powers", "vandermonde", "vandermonde_transposed", "NEGLIGIBLE"]

NEGLIGIBLE = 70.0
"""``|z|^l < e^-70 ~ 4e-31``: a mode's chunk whose first power is below this is skipped."""


def powers(log_z: torch.Tensor, n: int, stride: int = 1, positions_first: bool = False) -> torch.Tensor:
    """``z^(stride i)`` for ``i < n``: complex ``[..., N, n]`` from ``log_z [..., N]`` (``[..., n, N]``
    with ``positions_first``, computed in that layout rather than transposed).

    For ``n > 64``, ``i = b j + k`` (``b ~ sqrt(n)``) and ``z^(stride i) = z^(stride b j) z^(stride k)``:
    two tables of ``~sqrt(n)`` exact powers (:func:`_exact_powers`) and one complex product per
    entry — one rounding more (float32: 1.2e-6 against 1.1e-6 relative error to float64, dominated
    by the phase), but ``2 sqrt(n)`` instead of ``n`` exponentials, cosines and sines per mode, which
    dominate the cost (timing at GSS's kernel chunk: benchmarks/notes/2026-12-08-docstring-timings.md).
    Differentiable (autograd).
    """
    if n <= 64:
        return _exact_powers(log_z, n, stride, positions_first)
    b = 1 << ((n - 1).bit_length() + 1) // 2  # ~sqrt(n), a power of two
    hi = _exact_powers(log_z, -(-n // b), stride * b, positions_first)  # z^(stride b j)  [..., N, n/b]
    lo = _exact_powers(log_z, b, stride, positions_first)  # z^(stride k)    [..., N, b]
    if positions_first:
        return (hi.unsqueeze(-2) * lo.unsqueeze(-3)).flatten(-3, -2)[..., :n, :]
    return (hi.unsqueeze(-1) * lo.unsqueeze(-2)).flatten(-2)[..., :n]


def _exact_powers(log_z: torch.Tensor, n: int, stride: int, positions_first: bool = False) -> torch.Tensor:
    """``exp(stride i log z)`` for ``i < n``: real ``exp``, ``cos``, ``sin`` (complex ``exp`` is several
    times slower on CPUs), the phase in float64 reduced modulo 2π."""
    i = torch.arange(n, device=log_z.device, dtype=torch.float64) * stride
    if positions_first:  # [..., n, N]
        i, log_z = i.unsqueeze(-1), log_z.unsqueeze(-2)
    else:  # [..., N, n]
        log_z = log_z.unsqueeze(-1)
    mag = torch.exp(log_z.real * i.to(log_z.real.dtype))
    phase = torch.remainder(log_z.imag.double() * i, 2 * math.pi).to(mag.dtype)
    return torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))


def _split(L: int, rows: int) -> tuple[int, int]:
    """Chunk ``T`` and count ``J`` (``J T >= L``) about minimising ``rows J + T`` (the powers
    formed): ``T ~ sqrt(rows L)``, a nearby power of two when it divides ``L`` (no padding)."""
    T = min(L, max(1, round(math.sqrt(rows * L))))
    p = 1 << max(0, round(math.log2(T)))
    if p <= L and L % p == 0:
        T = p
    return T, -(-L // T)


def _plan(log_z: torch.Tensor, T: int, J: int) -> tuple[torch.Tensor | None, list[tuple[int, int, int]]]:
    """Modes of each group sorted slowest-decaying first (``order [G, N]``; None when no chunk is
    skipped, the modes then stay in place), and runs ``(j0, j1, m)``: chunks ``j0 <= j < j1`` get
    contributions from the first ``m`` sorted modes only — in every group, those with
    ``|z|^{jT} >= e^-70`` (one small host read of the ``J`` per-chunk counts)."""
    rate = -log_z.real.detach()  # [G, N] >= 0
    rate, order = torch.sort(rate, dim=-1)
    lag = torch.arange(J, device=rate.device, dtype=rate.dtype) * T  # lag jT of each chunk
    alive = (rate[:, None, :] * lag[:, None] < NEGLIGIBLE).sum(-1).amax(0).tolist()  # [J]
    runs, j0 = [], 0
    for j in range(1, J + 1):
        if j == J or alive[j] != alive[j0]:
            if alive[j0] > 0:
                runs.append((j0, j, alive[j0]))
            j0 = j
    N = log_z.shape[-1]
    return (None, [(0, J, N)]) if runs == [(0, J, N)] else (order, runs)


def _group_size(N: int, S: int, T: int, J: int) -> int:
    """Groups per slice: ~512K complex numbers (4 MB) in each of the ``[g, N, T]`` / ``[g, S, J, N]``
    factors, so a slice's transients, not ``G`` times them, set the memory peak."""
    return max(1, (1 << 19) // max(1, N * (T + S * J)))


def _factors(w, log_z, order, T, J):
    """Sorted modes and the matmul factors of (2) for one slice of groups:
    ``Re(q p) = q.re p.re - q.im p.im``, so ``Qs`` is ``q`` read as real pairs (a view) and ``Ps``
    holds ``(Re p, -Im p)`` per mode."""
    G, S, N = w.shape
    if order is not None:
        log_z = log_z.gather(-1, order)
        w = w.gather(-1, order.unsqueeze(1).expand(G, S, N))  # sorted modes
    P = powers(log_z, T)  # [G, N, T]   z^t
    Z = powers(log_z, J, stride=T, positions_first=True)  # [G, J, N]   z^{jT}
    q = (w.unsqueeze(2) * Z.unsqueeze(1)).contiguous()  # [G, S, J, N]
    Qs = torch.view_as_real(q).flatten(-2)  # [G, S, J, 2N] (Re, Im) per mode
    Ps = torch.stack([P.real, -P.imag], 2).flatten(1, 2)  # [G, 2N, T]    (Re, -Im) per mode
    return w, P, Z, Qs, Ps


class _Vandermonde(torch.autograd.Function):
    """(2) for ``w [G, S, N]`` (``S`` rows per group), ``log_z [G, N]`` -> real ``[G, S, L]``, in
    slices of groups (:func:`_group_size`).

    Gradients (real loss; torch's convention ``grad = d/dRe + i d/dIm``) with ``q = w z^{jT}``,
    ``p = z^t``::

        dq = dK p̄ᵀ,  dp = Σ q̄ dK,  dw = Σ_j dq z̄^{jT},
        dlog z = Σ_t t p̄ dp + Σ_j jT z̄^{jT} (Σ_rows dq w̄)
    """

    @staticmethod
    def forward(ctx, w, log_z, L):
        G, S, N = w.shape
        T, J = _split(L, S)
        order, runs = _plan(log_z, T, J)
        g = _group_size(N, S, T, J)
        out = None if g >= G else w.real.new_empty(G, S, L)
        for c in (slice(h, h + g) for h in range(0, G, g)):
            _, _, _, Qs, Ps = _factors(w[c], log_z[c], _at(order, c), T, J)
            n = Qs.shape[0]
            if runs == [(0, J, N)]:  # nothing skipped: one matmul
                K = torch.bmm(Qs.view(n, S * J, 2 * N), Ps).view(n, S, J, T)
            else:
                K = Qs.new_zeros(n, S, J, T)
                for j0, j1, m in runs:
                    K[:, :, j0:j1] = torch.bmm(Qs[:, :, j0:j1, : 2 * m].reshape(n, -1, 2 * m), Ps[:, : 2 * m]).view(
                        n, S, j1 - j0, T
                    )
            if out is None:  # one slice: a view, no copy
                out = K.flatten(-2)[..., :L]
            else:
                out[c] = K.flatten(-2)[..., :L]
        ctx.save_for_backward(w, log_z)
        ctx.L = L
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dK_all):
        w_all, log_z_all = ctx.saved_tensors
        G, S, N = w_all.shape
        L = ctx.L
        T, J = _split(L, S)
        order, runs = _plan(log_z_all, T, J)
        dw_all, dlog_z_all = torch.empty_like(w_all), torch.empty_like(log_z_all)
        t = torch.arange(T, device=w_all.device, dtype=w_all.real.dtype)
        jT = torch.arange(J, device=w_all.device, dtype=w_all.real.dtype) * T
        g = _group_size(N, S, T, J)
        for c in (slice(h, h + g) for h in range(0, G, g)):
            w, P, Z, Qs, Ps = _factors(w_all[c], log_z_all[c], _at(order, c), T, J)
            n = w.shape[0]
            dK = dK_all[c] if J * T == L else F.pad(dK_all[c], (0, J * T - L))
            dK = dK.unflatten(-1, (J, T))  # [g, S, J, T]
            if runs == [(0, J, N)]:  # nothing skipped: two matmuls
                dKr = dK.reshape(n, S * J, T)
                dQs = torch.bmm(dKr, Ps.transpose(1, 2)).view(n, S, J, 2 * N)
                dPs = torch.bmm(Qs.view(n, S * J, 2 * N).transpose(1, 2), dKr)
                runs_left = []
            else:
                dQs, dPs = torch.zeros_like(Qs), torch.zeros_like(Ps)
                runs_left = runs
            for j0, j1, m in runs_left:
                dKr = dK[:, :, j0:j1].reshape(n, -1, T)  # [g, S jn, T]
                dQs[:, :, j0:j1, : 2 * m] = torch.bmm(dKr, Ps[:, : 2 * m].transpose(1, 2)).view(n, S, j1 - j0, 2 * m)
                dPs[:, : 2 * m] += torch.bmm(Qs[:, :, j0:j1, : 2 * m].reshape(n, -1, 2 * m).transpose(1, 2), dKr)
            del dK, Qs, Ps
            dq = torch.view_as_complex(dQs.view(n, S, J, N, 2))  # [g, S, J, N]
            dP = torch.complex(dPs[:, 0::2], -dPs[:, 1::2])  # [g, N, T]
            dw = (dq * Z.conj().unsqueeze(1)).sum(2)  # [g, S, N]
            dZ = (dq * w.conj().unsqueeze(2)).sum(1)  # [g, J, N]
            dlog_z = (dP * P.conj() * t).sum(-1) + (dZ * Z.conj() * jT[:, None]).sum(1)
            if order is None:
                dw_all[c], dlog_z_all[c] = dw, dlog_z
            else:  # undo the sort
                dw_all[c] = torch.empty_like(dw).scatter_(-1, order[c].unsqueeze(1).expand(n, S, N), dw)
                dlog_z_all[c] = torch.empty_like(dlog_z).scatter_(-1, order[c], dlog_z)
        return dw_all, dlog_z_all, None


def _at(t: torch.Tensor | None, c: slice) -> torch.Tensor | None:
    return None if t is None else t[c]


def _groups(w: torch.Tensor, log_z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """``w [..., H, n]`` -> ``[G, S, n]``: per-channel modes (``log_z [H, N]``, G = H) or shared
    (``log_z [N]``, G = 1). Returns the inverse shape information."""
    if log_z.dim() == 1:
        return w.reshape(1, -1, w.shape[-1]), log_z.unsqueeze(0), ("shared", w.shape[:-1])
    lead = w.shape[:-2]
    return w.reshape(-1, *w.shape[-2:]).transpose(0, 1), log_z, ("channel", lead)


def _ungroup(K: torch.Tensor, how: tuple) -> torch.Tensor:
    kind, shape = how
    if kind == "shared":
        return K.reshape(*shape, K.shape[-1])
    return K.transpose(0, 1).reshape(*shape, K.shape[0], K.shape[-1])


def vandermonde(w: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """(1): ``K[..., h, l] = Re sum_n w[..., h, n] z[h, n]^l`` for ``l < L`` -> real ``[..., H, L]``.

    ``w [..., H, N]`` complex (leading batch dims allowed); ``log_z [H, N]`` (modes per channel) or
    ``[N]`` (modes shared by every channel).
    """
    wg, lz, how = _groups(w, log_z.to(w.dtype))
    return _ungroup(_Vandermonde.apply(wg, lz, L), how)


def vandermonde_transposed(u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """``x[..., h, n] = sum_l z[h, n]^(L-1-l) u[..., h, l]``: the state after ``u`` from zero.

    ``u [..., H, L]`` real, ``log_z [H, N]`` or ``[N]`` -> complex ``[..., H, N]``. Chunked like
    (2) (``L - 1 - l = j T + t``), so nothing of size ``N L`` is materialised (autograd backward).
    """
    L = u.shape[-1]
    ug, lz, how = _groups(u.to(log_z.real.dtype), log_z)  # [G, S, L], [G, N]
    G, S, _ = ug.shape
    T, J = _split(L, S)
    u_rev = F.pad(ug.flip(-1), (0, J * T - L)).unflatten(-1, (J, T))  # [G, S, J, T]
    P = powers(lz, T)  # [G, N, T]
    R = torch.bmm(u_rev.reshape(G, -1, T), torch.cat([P.real, P.imag], dim=1).transpose(1, 2))  # [G, S J, 2N]
    N = lz.shape[-1]
    R = torch.complex(R[..., :N], R[..., N:]).view(G, S, J, N)
    x = (R * powers(lz, J, stride=T, positions_first=True).unsqueeze(1)).sum(2)  # [G, S, N]
    return _ungroup(x, how)
