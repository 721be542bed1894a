"""FFT convolution of a sequence with an SSM kernel, causal, bidirectional or block-wise.

Causal (S4 Section 3.3, S4D Section 3.2)::

    y_l = sum_{m <= l} K_{l-m} u_m                                                    (1)

computed as ``irfft(rfft(u, n) * rfft(K, n))[:L]`` with ``n >= 2L - 1`` (no wrap-around):
O(L log L) per channel. ``n`` is the next 5-smooth size (2^a 3^b 5^c), which pocketFFT and
cuFFT both transform fast.

Bidirectional (the S4 repository's ``bidirectional=True``): a second kernel ``K'`` runs
backwards in time and excludes the current position (its skip term is already in ``D``)::

    y_l = sum_{m <= l} K_{l-m} u_m + sum_{m > l} K'_{m-l-1} u_m                       (2)

i.e. one circular convolution with ``[K, 0 ... 0, reverse(K'[:L-1])]``. Right padding is safe:
padded positions hold zero input (the mixer base class zeroes them) so they add nothing to (2).

Block-wise with state ("FlashConv", Fu et al. 2023, H3 Section 4.2): for the diagonal
recurrence ``x_l = z x_{l-1} + u_l, y_l = Re sum_n w_n x_l`` and a sequence split into blocks
of ``T``, each block is an FFT convolution of size ~2T plus the contribution of the state
entering the block (``Re sum_n w_n z_n^{t+1} x_n``, a Vandermonde product), and the state is
passed to the next block. The same code continues a sequence from a user-given state
(``forward(state=...)``), so split forward == one forward, and length-1 input is the O(N)
recurrent step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diag_ssm.chunk import diag_ssm_chunked
from ..diag_ssm.recurrent import diag_step
from ..vandermonde.chunk import vandermonde, vandermonde_transposed

__all__ = [
    "fast_fft_size",
    "fft_conv",
    "kernel_conv",
    "circular_kernel",
    "with_skip",
    "diag_ssm_conv",
    "ssm_apply",
    "grouped_kernel_conv",
]


def fast_fft_size(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n``."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def circular_kernel(k: torch.Tensor, D: torch.Tensor | None, n: int, L: int) -> torch.Tensor:
    """``k [C, g, <=L]`` (+ ``D [g]`` at lag 0) -> the length-``n`` circular kernel ``[g, n]`` of (1)
    (C = 1) or (2) (C = 2: ``k[1]`` holds the strict-future lags ``0 .. L-2``)."""
    out = k.new_zeros(k.shape[1], n)
    out[:, : k.shape[-1]] = k[0]
    if D is not None:
        out[:, 0] += D
    if k.shape[0] == 2 and L > 1:
        out[:, n - L + 1 :] = k[1, :, : L - 1].flip(-1)
    return out


def _channel_group(batch: int, n: int) -> int:
    """Channels per FFT: ~2 MB of float32 transients (``[batch, g, n]``)."""
    return max(1, (1 << 19) // (batch * n))


class _FFTConv(torch.autograd.Function):
    """(1) or (2) plus ``D u`` for ``u [B, H, L]``, ``k [C, H, Lk]`` (C = 1: causal, ``Lk <= L``;
    C = 2: with the strict-future kernel, ``Lk >= L - 1``), ``D [H]`` or None:
    ``irfft(rfft(u, n) rfft(k_full, n))[:L]`` with ``D`` as an extra lag-0 tap.

    Memory: runs ``g`` channels at a time (:func:`_channel_group`) and saves only ``u``, ``k``,
    ``D``; the backward recomputes the spectra (two more real FFTs) instead of keeping
    ``[B, H, n/2+1]`` complex spectra, which with the transients of a whole-``H`` FFT were most of
    an SSM layer's memory at L = 16K. The backward is the correlation with the spectra::

        G = rfft(g, n),  du = irfft(G conj(K))[:L],  dk_full = irfft(sum_batch G conj(U))

    (exact: for 0 <= m < L, l < L the lags l - m never wrap onto the kernel since n >= 2L - 1).
    """

    @staticmethod
    def forward(ctx, u, k, D, n):
        B, H, L = u.shape
        g = _channel_group(B, n)
        y = torch.empty_like(u)
        for c in (slice(h, h + g) for h in range(0, H, g)):
            K = torch.fft.rfft(circular_kernel(k[:, c], _at(D, c), n, L), n=n)  # [g, n/2+1]
            U = torch.fft.rfft(u[:, c], n=n)  # [B, g, n/2+1]
            y[:, c] = torch.fft.irfft(U.mul_(K), n=n)[..., :L]
        ctx.save_for_backward(u, k, D)
        ctx.n, ctx.g = n, g
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        u, k, D = ctx.saved_tensors
        (B, H, L), n = u.shape, ctx.n
        du = torch.empty_like(u) if ctx.needs_input_grad[0] else None
        need_k = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        dk = torch.zeros_like(k) if need_k else None
        for c in (slice(h, h + ctx.g) for h in range(0, H, ctx.g)):
            G = torch.fft.rfft(grad[:, c], n=n)  # [B, g, n/2+1]
            if du is not None:
                K = torch.fft.rfft(circular_kernel(k[:, c], _at(D, c), n, L), n=n).conj_physical_()
                du[:, c] = torch.fft.irfft(G * K, n=n)[..., :L]
            if need_k:
                G.mul_(torch.fft.rfft(u[:, c], n=n).conj_physical_())
                full = torch.fft.irfft(G.sum(0), n=n)  # [g, n]
                dk[0, c] = full[:, : k.shape[-1]]
                if k.shape[0] == 2 and L > 1:
                    dk[1, c, : L - 1] = full[:, n - L + 1 :].flip(-1)
        dD = None if D is None or not ctx.needs_input_grad[2] else dk[0, :, 0].clone()
        return du, (dk if ctx.needs_input_grad[1] else None), dD, None


def _at(t: torch.Tensor | None, c: slice) -> torch.Tensor | None:
    return None if t is None else t[c]


def kernel_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """``y = K * u (+ D u)``: ``u [..., H, L]``, stacked kernels ``k [C, H, <=L]`` — C = 1 causal (1),
    C = 2 with ``k[1]`` over the strict future (2) — and an optional skip ``D [H]``.

    Computed in float32 at least (there is no half-precision FFT on the CPU) and cast back, by
    :class:`_FFTConv` (channel groups, spectra recomputed in the backward).
    """
    *batch, H, L = u.shape
    dtype = u.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    k = k[..., :L].to(work)
    if k.shape[0] == 2 and k.shape[-1] < L:
        k = F.pad(k, (0, L - k.shape[-1]))
    y = _FFTConv.apply(u.to(work).reshape(-1, H, L), k, None if D is None else D.to(work), fast_fft_size(2 * L))
    return y.view(*batch, H, L).to(dtype)


class _GroupedKernelConv(torch.autograd.Function):
    """(1) or (2) plus ``D u`` for channels-last ``u [B, L, H]``, with the kernel built ``g``
    channels at a time by ``kernel_fn(c, L, *params) -> k [C, g, L]`` (differentiable in
    ``params``; ``c`` a slice of the ``H`` channels) and never stored whole.

    Memory: nothing of size ``[C, H, L]`` exists — neither the kernel (32 MB at C = 2, H = 256,
    L = 16K) nor its gradient; saved are ``u``, ``D`` and the (small) ``params``. The backward
    rebuilds each group's kernel under autograd (one more kernel evaluation), takes ``du`` from the
    spectra as :class:`_FFTConv` does and pulls the group's kernel gradient
    ``dk_full = irfft(sum_batch G conj(U))`` straight back to ``params`` and ``D``. Input and output
    stay in the caller's ``[B, L, H]`` layout, so neither the mixer nor the input gradient needs a
    transposed copy.
    """

    @staticmethod
    def forward(ctx, u, D, kernel_fn, n, *params):
        B, L, H = u.shape
        g = _channel_group(B, n)
        y = torch.empty_like(u)
        for c in (slice(h, h + g) for h in range(0, H, g)):
            K = torch.fft.rfft(circular_kernel(kernel_fn(c, L, *params), _at(D, c), n, L), n=n)  # [g, n/2+1]
            U = torch.fft.rfft(u[:, :, c].transpose(1, 2), n=n)  # [B, g, n/2+1]
            y[:, :, c] = torch.fft.irfft(U.mul_(K), n=n)[..., :L].transpose(1, 2)
        ctx.save_for_backward(u, D, *params)
        ctx.kernel_fn, ctx.n, ctx.g = kernel_fn, n, g
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        u, D, *params = ctx.saved_tensors
        (B, L, H), n = u.shape, ctx.n
        need_u, need_D = ctx.needs_input_grad[0], D is not None and ctx.needs_input_grad[1]
        need_p = list(ctx.needs_input_grad[4:])
        du = torch.empty_like(u) if need_u else None
        dD = torch.zeros_like(D) if need_D else None
        dp = [torch.zeros_like(p) if need else None for p, need in zip(params, need_p)]
        for c in (slice(h, h + ctx.g) for h in range(0, H, ctx.g)):
            with torch.enable_grad():  # this group's kernel, again
                ps = [p.detach().requires_grad_(need) for p, need in zip(params, need_p)]
                k = ctx.kernel_fn(c, L, *ps)  # [C, g, L]
            G = torch.fft.rfft(grad[:, :, c].transpose(1, 2), n=n)  # [B, g, n/2+1]
            if du is not None:
                K = torch.fft.rfft(circular_kernel(k.detach(), _at(D, c), n, L), n=n).conj_physical_()
                du[:, :, c] = torch.fft.irfft(G * K, n=n)[..., :L].transpose(1, 2)
            if any(need_p) or need_D:
                G.mul_(torch.fft.rfft(u[:, :, c].transpose(1, 2), n=n).conj_physical_())
                full = torch.fft.irfft(G.sum(0), n=n)  # d k_full [g, n]
                if need_D:
                    dD[c] = full[:, 0]
                if any(need_p):  # d k_full -> d k -> params
                    dk = torch.zeros_like(k)
                    dk[0] = full[:, :L]
                    if k.shape[0] == 2 and L > 1:
                        dk[1, :, : L - 1] = full[:, n - L + 1 :].flip(-1)
                    wrt = [p for p in ps if p.requires_grad]
                    for acc, gr in zip([a for a in dp if a is not None], torch.autograd.grad(k, wrt, dk)):
                        acc += gr
        return (du, dD, None, None, *dp)


def grouped_kernel_conv(
    u: torch.Tensor, kernel_fn, params: tuple[torch.Tensor, ...], D: torch.Tensor | None = None
) -> torch.Tensor:
    """``y = K * u (+ D u)`` for channels-last ``u [..., L, H]``, where the stacked kernels
    ``k [C, H, L] = kernel_fn(slice(None), L, *params)`` (C = 1: causal (1); C = 2: ``k[1]`` over the
    strict future (2)) are built a channel group at a time from the small tensors ``params``
    and never kept (:class:`_GroupedKernelConv`). ``kernel_fn(c, L, *params)`` must return the
    kernels of channels ``c`` only (``[C, len(c), L]``), differentiably in ``params``.

    Computed in float32 at least and cast back, like :func:`kernel_conv`.
    """
    *batch, L, H = u.shape
    dtype = u.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    y = _GroupedKernelConv.apply(
        u.to(work).reshape(-1, L, H), None if D is None else D.to(work), kernel_fn, fast_fft_size(2 * L), *params
    )
    return y.view(*batch, L, H).to(dtype)


def fft_conv(u: torch.Tensor, k: torch.Tensor, k_back: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (1), or (2) with ``k_back``: ``u [..., H, L]``, ``k, k_back [H, <=L]`` -> ``[..., H, L]``
    (:func:`kernel_conv` of the stacked kernels)."""
    L = u.shape[-1]
    if k_back is None:
        return kernel_conv(u, k.unsqueeze(0))
    k, kb = (F.pad(t[..., :L], (0, L - t[..., :L].shape[-1])) for t in (k, k_back))
    return kernel_conv(u, torch.stack([k, kb]))


def with_skip(k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """Fold the skip ``D u`` into the kernel as its lag-0 tap: ``K_0 + D`` (one less ``[B, H, L]``
    product and sum to compute and to keep for the backward pass)."""
    if D is None:
        return k
    return torch.cat([k[..., :1] + D.unsqueeze(-1).to(k.dtype), k[..., 1:]], dim=-1)


def diag_ssm_conv(
    u: torch.Tensor,
    w: torch.Tensor,
    log_z: torch.Tensor,
    state: torch.Tensor | None = None,
    *,
    D: torch.Tensor | None = None,
    return_state: bool = False,
    block_size: int | None = None,
):
    """Causal diagonal SSM ``x_l = z x_{l-1} + u_l, y_l = Re sum_n w_n x_{l,n}`` from ``x_{-1} = state``.

    ``u [..., H, L]`` real, ``w, log_z [H, N]`` complex, ``state [..., H, N]`` complex or None
    (zero); ``D [H]`` an optional skip ``+ D u``. Returns ``(y [..., H, L], x_{L-1} or None)``. With ``block_size`` the FFT runs on
    blocks of that length and the state is carried between them (O(L) memory, FFT size 2T).
    """
    L = u.shape[-1]
    if L == 1 and state is not None:  # the recurrent step
        y, x = diag_step(u[..., 0].to(log_z.real.dtype), w, log_z, state)
        y = y.unsqueeze(-1).to(u.dtype)
        return (y if D is None else y + D.unsqueeze(-1) * u), x
    T = L if block_size is None else min(block_size, L)
    k = with_skip(vandermonde(w, log_z, T), D)  # [H, T]
    ys = []
    for start in range(0, L, T):
        uc = u[..., start : start + T]  # [..., H, Tc]
        y = fft_conv(uc, k)
        if state is not None:  # + Re sum_n w z^{t+1} x_{start-1}
            y = y + vandermonde(w * torch.exp(log_z) * state, log_z, uc.shape[-1]).to(y.dtype)
        last = start + T >= L
        if not last or return_state:  # x_{end} = z^Tc x_{start-1} + sum z^{..} u
            x = vandermonde_transposed(uc.to(log_z.real.dtype), log_z)
            if state is not None:
                x = x + torch.exp(log_z * uc.shape[-1]) * state
            state = x
        ys.append(y)
    return torch.cat(ys, dim=-1), (state if return_state else None)


def ssm_apply(
    kernel,
    u: torch.Tensor,
    D: torch.Tensor,
    causal: bool,
    state: torch.Tensor | None = None,
    *,
    return_state: bool = False,
    block_size: int | None = None,
    method: str = "fft",
):
    """``SSM(u) + D u`` for a kernel module (:class:`~longseq.ssm.kernels.DiagSSMKernel`, ``DSSKernel``).

    ``u [..., H, L]``. ``method="fft"`` (default), and kernels without a recurrent form
    (DSS-softmax): causal recurrent kernels go through :func:`diag_ssm_conv` (state in/out,
    ``block_size`` blocks), otherwise one FFT convolution with ``kernel.kernel(L)`` — channel 0
    forward in time and, when not ``causal``, channel 1 over the strict future (eq. 2).
    ``method="chunked"`` (what ``s4d``/``dss`` use) runs kernels with a recurrent form through
    :func:`longseq.ops.diag_ssm.chunk.diag_ssm_chunked` from ``kernel.modes()`` (``w [C, H, N]``,
    ``log_z [H, N]``) — causal with state in/out, or bidirectional (channel 1 = the strict-future
    kernel); a length-1 input with a state is the recurrent step.
    Returns ``(y [..., H, L], state or None)``.
    """
    if method not in ("chunked", "fft"):
        raise ValueError(f"method must be 'chunked' or 'fft'; got {method!r}")
    recurrent = getattr(kernel, "recurrent", True)
    if method == "chunked" and recurrent and not (u.shape[-1] == 1 and state is not None):
        if not causal and (state is not None or return_state):
            raise ValueError("state/step need a causal SSM (the bidirectional form has no recurrent state)")
        w, log_z = kernel.modes()
        return diag_ssm_chunked(
            u, w[0], log_z, w_back=None if causal else w[1], D=D, state=state, return_state=return_state
        )
    if causal and recurrent:
        w, log_z = kernel.modes()
        return diag_ssm_conv(u, w[0], log_z, state, D=D, return_state=return_state, block_size=block_size)
    if state is not None or return_state:
        raise ValueError("this SSM kernel has no recurrent form (state/step need a causal 'exp'/S4D kernel)")
    k = kernel.kernel(u.shape[-1])  # [C, H, L]
    return kernel_conv(u, k[:1] if causal else k, D), None
