"""GSS — Mehta, Gupta, Cutkosky, Neyshabur 2023, "Long Range Language Modeling via Gated State
Spaces" (arXiv 2206.13947, Section 3 and its Figure 1 pseudo-code).

GAU-style gating around a simplified DSS kernel with a dimension reduction (E = d_model)::

    V   = GELU(x W_v)         [L, F],  F = expand * E        (expand = 4: the paper's E=1024, F=4096)
    U   = GELU(x W_u)         [L, H],  H = d_ssm  (default E / 4: the paper's H = 256 for E = 1024)
    Y   = DSS(U)              [L, H]   simplified DSS_exp kernel, no activation (+ D U skip)
    U_c = Y W_c               [L, F]
    out = (U_c * V) W_o       [L, E]

The SSM runs on the reduced H channels, which is what makes GSS faster than DSS at equal width.

The simplified DSS of the GSS pseudo-code (``kernel="gss"``, the default): ONE set of
``N = d_state = 512`` complex modes shared by all H channels, Δ fixed to 1::

    Λ = -exp(Λ_re) + i exp(Λ_im) ∈ C^N,   Λ_re, Λ_im ~ N(0, 1)       (random, not HiPPO)
    K[h, l] = Re Σ_n C[h, n] (e^{Λ_n} - 1) / Λ_n · e^{Λ_n l},   C ∈ C^{H×N}, Re C, Im C ~ N(0, 1)
    Y = K * U + D ⊙ U                                               (causal convolution)

i.e. the diagonal recurrence ``x_l = e^Λ x_{l-1} + U_l``, ``Y_l = Re Σ_n w_{h,n} x_{l,n} + D U_l``
with ``w = C (e^Λ - 1)/Λ`` (ZOH with B = 1, Δ = 1).

Speed and memory at long L (issue 4; three custom autograd functions that save almost nothing):

* Kernel (:func:`shared_vandermonde`). Because Λ is shared, ``K[c, h, jT + t] = Re Σ_n (w_{c,h,n}
  z_n^{jT}) z_n^t`` is a real matmul ``[C·H·J, 2N] @ [2N, T]`` over powers ``z^t`` shared by every
  channel, ``T ~ sqrt(C·H·L)``: nothing of size ``N·L`` is materialised. Chunks in which a mode has
  decayed below ``e^-70`` are skipped (exact to 1e-30, :func:`_plan`): at the random init almost
  every mode is gone after a few hundred lags, so the 16K kernel costs one chunk; modes that learn
  long memory are kept, up to the full ``O(C·H·N·L)``.
* Convolution (:class:`_ChannelFFTConv`): eq. (1)/(2) of :mod:`longseq.ssm.fftconv` by FFT,
  O(L log L), a few channels at a time, recomputing the spectra in the backward.
* Gated branch (:class:`_GatedOut`). Autograd would keep ``x W_v``, ``V``, ``U_c`` and ``U_c ⊙ V``
  (four ``[L, F]`` tensors, 64 MB each at L = 16K, F = 1024) plus ``[L, F]`` gradients. Here it
  runs in sequence chunks and saves only ``x W_v + b_v``; the backward recomputes ``V``
  (elementwise) and ``U_c = Y W_c`` (an ``[L, H + 1] @ [H + 1, F]`` matmul, cheap since H = E/4).

Decisions on ambiguous points:
* Kernel: ``kernel="gss"`` follows the paper's simplified DSS as read in the reference notes
  (../shared/reference/methods.md §15: shared Λ, random N(0, 1) init, Δ = 1, C ∈ C^{H×N}; the
  third-party lucidrains/gated-state-spaces-pytorch reading agrees). The paper's full text was
  not retrievable with our search tools, so the exact wording of Section 3 is not verified here.
  ``kernel="dss"`` keeps the previous per-channel DSS_exp kernel
  (:class:`longseq.ssm.kernels.DSSKernel`: skew-HiPPO Λ per channel, learned Δ with log Δ ~
  U[log dt_min, log dt_max]) — what this mixer used before; ``dt_min``/``dt_max`` only apply to it.
* Λ (and Δ for ``kernel="dss"``) get learning rate ``lr`` and no weight decay (the DSS recipe; the
  GSS paper's optimiser settings for Λ are not verified here; ``lr=None`` keeps the global rate).
  C and D are ordinary weights.
* The paper's layer also holds the pre-LayerNorm and the residual; here the block builder owns
  both (as for every mixer), so the mixer is the map above. GSS stacks these layers without a
  separate feed-forward (the F = 4E gated branch is its FFN, as in GAU), hence ``has_ffn=True``.
  The lucidrains reading adds a LayerNorm inside DSS and drops the projection biases; neither is
  in the reference notes' equations, so neither is done here (the projections keep their biases).
* Bidirectional mode (not in the paper, a language-model layer): a second set of C over the
  strict future, as in ``s4d`` (eq. (2) of :mod:`longseq.ssm.fftconv`). U is zeroed at padded
  positions (GELU(bias) is not zero) so right padding never reaches real positions through the
  backward kernel.
* Recurrent ``step``: the diagonal recurrence above on the H channels (state ``[H, N]`` complex).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import set_optim
from ..ssm.fftconv import fast_fft_size, ssm_apply, with_skip
from ..ssm.kernels import DSSKernel
from .base import Mixer, register

KERNELS = ("gss", "dss")


# ---------------------------------------------------------------------------- shared-mode kernel
def _split(L: int, rows: int) -> tuple[int, int]:
    """Chunk ``T`` and count ``J`` (``J T >= L``) minimising ``rows·J + T`` (the elementwise work)."""
    T = min(L, max(1, round(math.sqrt(rows * L))))
    return T, -(-L // T)


def _powers(log_z: torch.Tensor, n: int, stride: int = 1) -> torch.Tensor:
    """``z^(stride i)`` for ``i < n``: complex ``[N, n]`` (no autograd; see :class:`_SharedVandermonde`).

    Phases ``l Im log z`` reach ~1e5 at L = 16K, where float32 has lost the angle: they are
    formed in float64 and reduced modulo 2π before the cosine and sine.
    """
    i = torch.arange(n, device=log_z.device, dtype=log_z.real.dtype) * stride
    mag = torch.exp(log_z.real.unsqueeze(-1) * i)
    phase = torch.remainder(log_z.imag.unsqueeze(-1).double() * i.double(), 2 * math.pi).to(mag.dtype)
    return torch.polar(mag, phase)


NEGLIGIBLE = 70.0      # |z|^l < e^-70 ~ 4e-31: below float64 resolution of any kernel value


def _plan(log_z: torch.Tensor, T: int, J: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Modes sorted slowest-decaying first, and runs ``(j0, j1, m)``: chunks ``j0 <= j < j1`` get
    contributions from the first ``m`` sorted modes only — those with ``|z|^{jT} >= e^-70``.

    Chunk ``j`` of mode ``n`` is ``w z^{jT} z^t`` with ``|z^{jT}| < e^-70`` once ``jT |Re log z| > 70``;
    dropping it changes no kernel value (or gradient) by more than 1e-30 relative. At the paper's
    initialisation (``|Re Λ| = exp(N(0, 1))``) nearly every mode is gone after a few hundred lags,
    so the kernel costs ~one chunk instead of ``J``; modes that learn long memory (``Re Λ -> 0``)
    are kept to the end, up to the full ``O(rows N L)``. (The matmul shapes depend on Λ: one small
    host read of the ``J`` per-chunk counts.)
    """
    rate = -log_z.real.detach()                                          # [N] >= 0
    order = torch.argsort(rate)
    limit = torch.arange(J, device=rate.device, dtype=rate.dtype) * T    # lag jT of each chunk
    alive = (rate[None, :] * limit[:, None] < NEGLIGIBLE).sum(-1).tolist()   # [J] modes per chunk
    runs, j0 = [], 0
    for j in range(1, J + 1):
        if j == J or alive[j] != alive[j0]:
            if alive[j0] > 0:
                runs.append((j0, j, alive[j0]))
            j0 = j
    return order, runs


class _SharedVandermonde(torch.autograd.Function):
    """``K[..., jT + t] = Re Σ_n (w_n z_n^{jT}) z_n^t``: matmuls ``[..., J, 2m] @ [2m, T]`` over the
    modes still alive in each run of chunks (:func:`_plan`; ``m = N`` for every chunk in the worst case).

    Saves only ``w`` and ``log z``; the backward rebuilds the powers (``O(rows·J·N + N·T)``
    elementwise work) instead of keeping them and autograd's copies of every intermediate.
    Gradients (real loss, ``grad = ∂/∂Re + i ∂/∂Im``) with ``q = w z^{jT}``, ``p = z^t``::

        dq = dK p̄ᵀ,  dp = Σ q̄ dK,  dw = Σ_j dq z̄^{jT},  dlog z = Σ_t dp t p̄ + Σ_j (Σ dq w̄) jT z̄^{jT}
    """

    @staticmethod
    def _factors(w, log_z, L):
        T, J = _split(L, w[..., 0].numel())
        order, runs = _plan(log_z, T, J)
        log_z, w = log_z[order], w[..., order]                           # sorted modes
        P = _powers(log_z, T)                                            # [N, T]   z^t
        Z = _powers(log_z, J, stride=T).T                                # [J, N]   z^{jT}
        q = w.unsqueeze(-2) * Z                                          # [..., J, N]
        Qs = torch.stack([q.real, -q.imag], dim=-1).flatten(-2)          # [..., J, 2N]  (Re, -Im) per mode
        Ps = torch.stack([P.real, P.imag], dim=1).flatten(0, 1)          # [2N, T]       (Re, Im) per mode
        return T, J, order, runs, w, log_z, P, Z, Qs, Ps

    @staticmethod
    def forward(ctx, w, log_z, L):
        T, J, _, runs, _, _, _, _, Qs, Ps = _SharedVandermonde._factors(w, log_z, L)
        K = Qs.new_zeros(*Qs.shape[:-1], T)                              # [..., J, T]
        for j0, j1, m in runs:
            torch.matmul(Qs[..., j0:j1, : 2 * m], Ps[: 2 * m], out=K[..., j0:j1, :])
        ctx.save_for_backward(w, log_z)
        ctx.L = L
        return K.flatten(-2)[..., :L]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dK):
        w0, log_z0 = ctx.saved_tensors
        L = ctx.L
        T, J, order, runs, w, log_z, P, Z, Qs, Ps = _SharedVandermonde._factors(w0, log_z0, L)
        dK = F.pad(dK, (0, J * T - L)).unflatten(-1, (J, T))            # [..., J, T]
        dQs, dPs = torch.zeros_like(Qs), torch.zeros_like(Ps)
        for j0, j1, m in runs:
            dQs[..., j0:j1, : 2 * m] = dK[..., j0:j1, :] @ Ps[: 2 * m].T
            dPs[: 2 * m] += Qs[..., j0:j1, : 2 * m].flatten(0, -2).T @ dK[..., j0:j1, :].flatten(0, -2)
        dq = torch.complex(dQs[..., 0::2], -dQs[..., 1::2])              # d/dRe q + i d/dIm q
        dP = torch.complex(dPs[0::2], dPs[1::2])                         # [N, T]
        dw = (dq * Z.conj()).sum(-2)
        dZ = (dq * w.unsqueeze(-2).conj()).flatten(0, -3).sum(0)        # [J, N]
        t = torch.arange(T, device=w.device, dtype=w.real.dtype)
        jT = torch.arange(J, device=w.device, dtype=w.real.dtype) * T
        dlog_z = (dP * P.conj() * t).sum(-1) + (dZ * Z.conj() * jT[:, None]).sum(0)
        dw0, dlog_z0 = torch.empty_like(dw), torch.empty_like(dlog_z)
        dw0[..., order], dlog_z0[order] = dw, dlog_z                     # undo the sort
        return dw0, dlog_z0, None


def shared_vandermonde(w: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """``K[..., l] = Re Σ_n w[..., n] z_n^l``, ``l < L``: ``w [..., N]`` complex, ``log_z [N]`` -> real ``[..., L]``."""
    return _SharedVandermonde.apply(w, log_z, L)


def shared_vandermonde_transposed(u: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """``x[..., n] = Σ_l z_n^(L-1-l) u[..., l]`` (the state after ``u`` from zero): ``u [..., L]`` real -> ``[..., N]`` complex."""
    L = u.shape[-1]
    T, J = _split(L, u[..., 0].numel())
    u_rev = F.pad(u.flip(-1), (0, J * T - L)).unflatten(-1, (J, T))  # [..., J, T]   lag L-1-l = jT + t
    P = _powers(log_z, T)                                            # [N, T]
    R = u_rev @ torch.cat([P.real, P.imag], dim=0).T                 # [..., J, 2N]
    Z = _powers(log_z, J, stride=T).T                                # [J, N]
    N = log_z.shape[-1]
    return (torch.complex(R[..., :N], R[..., N:]) * Z).sum(-2)


class SharedDSSKernel(nn.Module):
    """GSS's simplified DSS: ``N`` modes ``Λ`` shared by ``H`` channels, ``Δ = 1``, ``C [C, H, N]``."""

    def __init__(self, H: int, N: int = 512, *, channels: int = 1, lr: float | None = 1e-3):
        super().__init__()
        f = torch.get_default_dtype()
        self.Lambda_re = nn.Parameter(torch.randn(N, dtype=f))      # Re Λ = -exp(Λ_re)
        self.Lambda_im = nn.Parameter(torch.randn(N, dtype=f))      # Im Λ = exp(Λ_im)
        self.C = nn.Parameter(torch.randn(channels, H, N, 2, dtype=f))  # real, imaginary
        tag = {"weight_decay": 0.0} if lr is None else {"lr": lr, "weight_decay": 0.0}
        for p in (self.Lambda_re, self.Lambda_im):
            set_optim(p, **tag)

    def modes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w [C, H, N], log_z = Λ [N])``: ``x_l = e^Λ x_{l-1} + u_l``, ``y_l = Re Σ_n w_n x_{l,n}``."""
        dtype = torch.float32 if self.C.dtype in (torch.float16, torch.bfloat16) else self.C.dtype
        lam = torch.complex(-torch.exp(self.Lambda_re.to(dtype)), torch.exp(self.Lambda_im.to(dtype)))
        C = torch.view_as_complex(self.C.to(dtype).contiguous())
        return C * (torch.expm1(lam) / lam), lam


# ---------------------------------------------------------------------------- convolution
def _full_kernel(k: torch.Tensor, n: int) -> torch.Tensor:
    """``k [C, h, L]`` -> the length-``n`` circular kernel ``[h, n]`` of eq. (1) (C = 1) or (2) (C = 2)."""
    L = k.shape[-1]
    out = k.new_zeros(k.shape[1], n)
    out[:, :L] = k[0]
    if k.shape[0] == 2 and L > 1:
        out[:, n - L + 1 :] = k[1, :, : L - 1].flip(-1)
    return out


class _ChannelFFTConv(torch.autograd.Function):
    """``y [B, H, L]`` = causal (``k [1, H, L]``) or bidirectional (``k [2, H, L]``, the second over
    the strict future) convolution of ``u [B, H, L]``; FFT size ``n = fast_fft_size(2L)``.

    The same product as :func:`longseq.ssm.fftconv.fft_conv`, computed ``group`` channels at a
    time and saving only ``u`` and ``k`` (the spectra are recomputed in the backward): its
    ``[B, H, n]`` transients and saved spectra were most of this mixer's memory at L = 16K.
    """

    @staticmethod
    def forward(ctx, u, k, group):
        L, n = u.shape[-1], fast_fft_size(2 * u.shape[-1])
        y = torch.empty_like(u)
        for h in range(0, u.shape[1], group):
            K = torch.fft.rfft(_full_kernel(k[:, h : h + group], n), n=n)        # [g, n/2+1]
            U = torch.fft.rfft(u[:, h : h + group], n=n)                           # [B, g, n/2+1]
            y[:, h : h + group] = torch.fft.irfft(U.mul_(K), n=n)[..., :L]
        ctx.save_for_backward(u, k)
        ctx.group = group
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        u, k = ctx.saved_tensors
        L, n, group = u.shape[-1], fast_fft_size(2 * u.shape[-1]), ctx.group
        du, dk = torch.empty_like(u), torch.empty_like(k)
        for h in range(0, u.shape[1], group):
            K = torch.fft.rfft(_full_kernel(k[:, h : h + group], n), n=n).conj_physical_()
            G = torch.fft.rfft(g[:, h : h + group], n=n)                           # [B, g, n/2+1]
            du[:, h : h + group] = torch.fft.irfft(G * K, n=n)[..., :L]
            G.mul_(torch.fft.rfft(u[:, h : h + group], n=n).conj_physical_())
            dfull = torch.fft.irfft(G.sum(0), n=n)                                 # [g, n]
            dk[0, h : h + group] = dfull[:, :L]
            if k.shape[0] == 2:
                dk[1, h : h + group, : L - 1] = dfull[:, n - L + 1 :].flip(-1)
                dk[1, h : h + group, L - 1 :] = 0
        return du, dk, None


def channel_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """:class:`_ChannelFFTConv` in float32 at least (no half-precision FFT on CPUs), cast back."""
    work = torch.float32 if u.dtype in (torch.float16, torch.bfloat16) else u.dtype
    return _ChannelFFTConv.apply(u.to(work), k.to(work), _channel_group(u.shape[0], u.shape[-1])).to(u.dtype)


def _channel_group(batch: int, L: int) -> int:
    return max(1, (1 << 18) // (batch * L))        # channels per FFT: ~1 MB transients (float32, n ~ 2L)


# ---------------------------------------------------------------------------- gated branch
def _chunk_rows(F_dim: int) -> int:
    return max(1, (1 << 20) // F_dim)        # ~1M elements (4 MB float32) per [rows, F] buffer


class _GatedOut(torch.autograd.Function):
    """``out = (y1 W_c1^T ⊙ GELU(x W_v^T + b_v)) W_o^T + b_o`` over rows, in chunks.

    ``x [R, E]``; ``y1 = [y, 1]`` ``[R, H + 1]`` and ``W_c1 = [W_c, b_c]`` (the bias of ``U_c``
    folded into its matmul). Saves ``a = x W_v^T + b_v`` ``[R, F]`` only; the backward recomputes
    ``V = GELU(a)`` and ``U_c`` per chunk into a few reused ``[chunk, F]`` buffers, so no other
    ``[R, F]`` tensor ever lives (and the allocator is not asked for any).
    """

    @staticmethod
    def forward(ctx, x, y1, Wv, bv, Wc1, Wo, bo):
        a = x.new_empty(x.shape[0], Wv.shape[0])
        out = _gated_forward(x, y1, Wv, bv, Wc1, Wo, bo, keep=a)
        ctx.save_for_backward(x, y1, a, Wv, Wc1, Wo)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, y1, a, Wv, Wc1, Wo = ctx.saved_tensors
        g = g.contiguous()
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dy1 = torch.empty_like(y1) if ctx.needs_input_grad[1] else None
        dWv, dWc1, dWo = torch.zeros_like(Wv), torch.zeros_like(Wc1), torch.zeros_like(Wo)
        dbv = Wv.new_zeros(Wv.shape[0])
        c = _chunk_rows(Wv.shape[0])
        bufs = x.new_empty(4, min(c, x.shape[0]), Wv.shape[0])
        for s in range(0, x.shape[0], c):
            g_c, x_c, y_c = g[s : s + c], x[s : s + c], y1[s : s + c]
            a_c, (v, uc, dp, t) = a[s : s + c], bufs[:, : x_c.shape[0]]          # [c, F] each
            torch.ops.aten.gelu.out(a_c, out=v)
            torch.mm(y_c, Wc1.T, out=uc)
            dWo.addmm_(g_c.T, torch.mul(uc, v, out=t))
            torch.mm(g_c, Wo, out=dp)                                          # dP
            duc = torch.mul(dp, v, out=t)                                      # dU_c = dP V
            dWc1.addmm_(duc.T, y_c)
            if dy1 is not None:
                torch.mm(duc, Wc1, out=dy1[s : s + c])
            da = torch.ops.aten.gelu_backward.grad_input(dp.mul_(uc), a_c, grad_input=v)  # dV GELU'(a)
            dWv.addmm_(da.T, x_c)
            dbv += da.sum(0)
            if dx is not None:
                torch.mm(da, Wv, out=dx[s : s + c])
        return dx, dy1, dWv, dbv, dWc1, dWo, g.sum(0)


def _gated_forward(x, y1, Wv, bv, Wc1, Wo, bo, keep=None):
    """The chunked forward of :class:`_GatedOut`; ``keep [R, F]`` receives ``x W_v^T + b_v`` when given."""
    out = x.new_empty(x.shape[0], Wo.shape[0])
    c = _chunk_rows(Wv.shape[0])
    bufs = x.new_empty(2 if keep is None else 1, min(c, x.shape[0]), Wv.shape[0])
    for s in range(0, x.shape[0], c):
        x_c = x[s : s + c]
        a = torch.addmm(bv, x_c, Wv.T, out=bufs[1, : x_c.shape[0]] if keep is None else keep[s : s + c])
        p = torch.mm(y1[s : s + c], Wc1.T, out=bufs[0, : x_c.shape[0]]).mul_(F.gelu(a))
        torch.addmm(bo, p, Wo.T, out=out[s : s + c])
    return out


# ---------------------------------------------------------------------------- mixer
def _gss_flops(L, d, h, causal):
    Fdim, H, N, C = 4 * d, max(1, d // 4), 512, 1 if causal else 2
    n = fast_fft_size(2 * L)
    ssm = 4.0 * C * H * N * L + H * (3 * 2.5 * n * math.log2(n) + 6.0 * n)   # kernel matmul + FFT conv
    return 2.0 * L * (d * Fdim + d * H + H * Fdim + Fdim * d) + ssm


@register(
    "gss",
    family="state space",
    paper="Mehta, Gupta, Cutkosky, Neyshabur 2023, Long Range Language Modeling via Gated State Spaces",
    complexity="O(N log N)",
    causal=True,
    bidirectional=True,
    step=True,
    has_ffn=True,
    flops=_gss_flops,
)
class GSS(Mixer):
    def __init__(self, d_model, *, num_heads=1, causal=False, expand=4, d_ssm=None, d_state=512,
                 kernel="gss", dt_min=1e-3, dt_max=1e-1, lr=1e-3):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        H = max(1, d_model // 4) if d_ssm is None else d_ssm
        if not isinstance(H, int) or H < 1:
            raise ValueError(f"d_ssm must be a positive int or None (d_model // 4), got {d_ssm!r}")
        if not isinstance(expand, int) or expand < 1:
            raise ValueError(f"expand must be a positive int, got {expand!r}")
        if not isinstance(d_state, int) or d_state < 1:
            raise ValueError(f"d_state must be a positive int, got {d_state!r}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
        Fdim, C = expand * d_model, 1 if causal else 2
        self.v_proj = nn.Linear(d_model, Fdim)
        self.u_proj = nn.Linear(d_model, H)
        if kernel == "gss":
            self.kernel = SharedDSSKernel(H, d_state, channels=C, lr=lr)
        else:
            self.kernel = DSSKernel(H, d_state, channels=C, variant="exp", dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.D = nn.Parameter(torch.randn(H))
        self.c_proj = nn.Linear(H, Fdim)
        self.out = nn.Linear(Fdim, d_model)

    def _ssm(self, u, state, return_state):
        """``u [B, H, L]`` -> ``(SSM(u) + D u [B, H, L], new state or None)``."""
        if isinstance(self.kernel, DSSKernel):
            return ssm_apply(self.kernel, u, self.D, self.causal, state, return_state=return_state)
        w, log_z = self.kernel.modes()                                      # [C, H, N], [N]
        L, D = u.shape[-1], self.D.to(w.real.dtype)
        if L == 1 and state is not None:                                    # the recurrent step
            x = torch.exp(log_z) * state + u.to(w.real.dtype)               # [B, H, N]
            return ((w[0] * x).real.sum(-1, keepdim=True) + D[:, None] * u).to(u.dtype), x
        k = shared_vandermonde(w, log_z, L)                                 # [C, H, L]
        y = channel_fft_conv(u, torch.cat([with_skip(k[:1], D), k[1:]]))
        if state is not None:                                               # + Re Σ w z^{l+1} x_{-1}
            y = y + shared_vandermonde(w[0] * torch.exp(log_z) * state, log_z, L).to(y.dtype)
        if not return_state:
            return y, None
        x = shared_vandermonde_transposed(u.to(w.real.dtype), log_z)       # [B, H, N]
        if state is not None:
            x = x + torch.exp(log_z * L) * state
        return y, x

    def _forward(self, x, mask, state, return_state):
        u = F.gelu(self.u_proj(x))                                          # [B, L, H]
        if mask is not None:
            u = u * mask.unsqueeze(-1).to(u.dtype)
        y, state = self._ssm(u.transpose(1, 2), None if state is None else state["x"], return_state)
        y1 = F.pad(y.transpose(1, 2), (0, 1), value=1.0).reshape(-1, y.shape[1] + 1)   # [B L, H + 1]
        Wc1 = torch.cat([self.c_proj.weight, self.c_proj.bias.unsqueeze(-1)], dim=-1)  # [F, H + 1]
        args = (x.reshape(-1, x.shape[-1]), y1, self.v_proj.weight, self.v_proj.bias, Wc1,
                self.out.weight, self.out.bias)
        if torch.is_grad_enabled() and any(t.requires_grad for t in args):
            out = _GatedOut.apply(*args)
        else:
            out = _gated_forward(*args)
        return out.view_as(x), ({"x": state} if return_state else None)

    def _init_state(self, batch_size, device, dtype):
        w, _ = self.kernel.modes()
        return {"x": torch.zeros(batch_size, *w.shape[1:], dtype=w.dtype, device=device)}

    def state_size(self, seq_len):
        w, _ = self.kernel.modes()
        return 2 * w.shape[1] * w.shape[2]
