"""S4's convolution kernel and ``y = K * u + D u`` per block of channels (the fast twin of :mod:`.naive`).

Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with Structured State Spaces" (S4),
Section 3.3, Lemma C.3, Algorithm 1: with ``C̃ = C (I - Ā^ℓ)`` the trained output matrix, the kernel's
spectrum at the ``ℓ``-th roots of unity is ``K̂ = C̃ (t - sA)^{-1} B`` (``t = (1-ω)/Δ``,
``s = (1+ω)/2``, ``A = Λ - P P*``), by Woodbury four Cauchy sums
(:func:`longseq.ops.cauchy.cauchy_sequences`) and :func:`longseq.ops.cauchy.woodbury_irfft`;
``K = irfft(K̂)[:L]``, then the FFT convolution (eq. (2) of :mod:`longseq.ops.fftconv.fft` when
bidirectional, the official ``bidirectional=True``).
"""

from __future__ import annotations

import torch

from ..cauchy.fused import cauchy_sequences, woodbury_irfft
from ..fftconv.fft import circular_kernel, fast_fft_size

__all__ = ["s4_conv", "dplr_kernel"]


def s4_conv(
    u: torch.Tensor,
    Lam: torch.Tensor,
    P: torch.Tensor,
    B: torch.Tensor,
    Ct: torch.Tensor,
    dt: torch.Tensor,
    D: torch.Tensor,
    l_max: int,
    causal: bool,
    block: int,
) -> torch.Tensor:
    """``y [B, L, H] = K * u + D u`` for ``u [B, L, H]``: ``Λ, P, B [H, N/2]`` and ``C̃ [dirs, H, N/2]`` complex,
    ``Δ [H]``, ``D [H]``; the kernel computed at length ``l_max >= L`` and truncated; ``block`` channels at a
    time. No state (continuing from one: the mixer's ``forward(state=...)``)."""
    if u.dtype != Lam.real.dtype:
        raise ValueError(
            f"s4_conv: u must have the real dtype of Λ, {Lam.real.dtype} (float32 or float64), got {u.dtype}; "
            "the mixer runs half-precision inputs in float32"
        )
    return _S4Conv.apply(u, Lam, P, B, Ct, dt, D, l_max, causal, block)


def dplr_kernel(Lam, P, B, Ct, dt, x0, *, n: int, L: int):
    """Kernel of :meth:`longseq.mixers.s4.S4.kernel` for a block of channels, at length ``n`` (``C̃`` for ``n``), cut to ``L``."""
    mu = dt[:, None] * Lam / 2  # [H, N/2]
    Pc = P.conj()
    v = [Ct * B, Ct * P, (Pc * B).unsqueeze(0), (Pc * P).unsqueeze(0)]
    if x0 is not None:  # w = (2/Δ + A) x0 / 2, A = Λ - p p*
        pw = 2 * (Pc * x0).real.sum(-1, keepdim=True)  # p* x0_full  [B, H, 1]
        w = x0 / dt[:, None] + (Lam * x0 - P * pw) / 2  # [B, H, N/2]
        v += [Ct[0] * w, Pc * w]
    sizes = [t.shape[0] for t in v]
    g = cauchy_sequences(torch.cat(v), mu, dt, n).split(sizes)  # [., H, n] each
    k = woodbury_irfft(g[0], g[1], g[2], g[3], n)[..., :L]  # [dirs, H, L]
    if x0 is None:
        return k
    return k, woodbury_irfft(g[4], g[1][:1], g[5], g[3], n)[..., :L]  # [B, H, L]


def _conv_spectrum(k: torch.Tensor, D: torch.Tensor, n: int, causal: bool) -> torch.Tensor:
    """``rfft`` (size ``n``) of the circular kernel of eq. (2) with the skip ``D`` as lag-0 tap
    (:func:`longseq.ops.fftconv.fft.circular_kernel`) from ``k [dirs, h, L]`` -> ``[h, n//2+1]``."""
    return torch.fft.rfft(circular_kernel(k[:1] if causal else k, D, n, k.shape[-1]), n=n)


def _channel_blocks(H: int, block: int):
    return [slice(h, h + block) for h in range(0, H, block)]


class _S4Conv(torch.autograd.Function):
    """``y = K * u + D u`` (eq. 1 or 2) for ``u [B, L, H]``, kernel and FFT convolution per block of channels.

    Forward keeps nothing but its inputs (``u`` and the ``[H, N/2]`` SSM parameters). Backward
    recomputes, per block, the kernel under autograd (Cauchy + Woodbury, :func:`dplr_kernel`) and
    the spectra of ``u`` and of the circular kernel, then (``n >= 2L``, no wrap-around)::

        G = rfft(dy, n),  du = irfft(G conj(K̂_c))[:L],  dk_c = irfft(Σ_batch G conj(Û))

    where ``dk_c`` splits into ``dK = dk_c[:L]``, ``dK'_m = dk_c[n-1-m]`` and ``dD = dk_c[0]``;
    ``dK, dK'`` go back through the block's kernel graph. Gradients are written into full-size
    buffers per block, so no ``[B, L, H]`` tensor is zero-filled or summed per block.
    """

    @staticmethod
    def forward(ctx, u, Lam, P, B, Ct, dt, D, n_kernel, causal, block):
        y = torch.empty_like(u)  # [B, L, H]
        for c in _channel_blocks(u.shape[-1], block):
            y[..., c] = _S4Conv._block_forward(u[..., c], (Lam[c], P[c], B[c], Ct[:, c], dt[c]), D[c], n_kernel, causal)
        ctx.save_for_backward(u, Lam, P, B, Ct, dt, D)
        ctx.n_kernel, ctx.causal, ctx.block = n_kernel, causal, block
        return y

    @staticmethod
    def _block_forward(u, ssm, D, n_kernel, causal):
        """``u [B, L, h]`` -> ``y [B, L, h]`` (a function, so the block's temporaries die on return)."""
        L = u.shape[1]
        n = fast_fft_size(2 * L)
        k = dplr_kernel(*ssm, None, n=n_kernel, L=L)  # [dirs, h, L]
        U = torch.fft.rfft(u.transpose(-1, -2), n=n)  # [B, h, n//2+1]
        U *= _conv_spectrum(k, D, n, causal)
        return torch.fft.irfft(U, n=n)[..., :L].transpose(-1, -2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        u, Lam, P, B, Ct, dt, D = ctx.saved_tensors
        need = ctx.needs_input_grad
        du = torch.empty_like(u) if need[0] else None
        grads = [torch.zeros_like(t) if need[i + 1] else None for i, t in enumerate((Lam, P, B, Ct, dt, D))]
        for c in _channel_blocks(u.shape[-1], ctx.block):
            ssm = [t[c].detach().requires_grad_(need[i + 1]) for i, t in enumerate((Lam, P, B))]
            ssm += [Ct[:, c].detach().requires_grad_(need[4]), dt[c].detach().requires_grad_(need[5])]
            du_c, gs, dD = _S4Conv._block_backward(ctx, dy[..., c], u[..., c], ssm, D[c])
            if du is not None:
                du[..., c] = du_c
            if dD is not None:
                grads[5][c] = dD
            for i, g in gs:
                if i == 3:
                    grads[i][:, c] = g
                else:
                    grads[i][c] = g
        return (du, *grads, None, None, None)

    @staticmethod
    def _block_backward(ctx, dy, u, ssm, D):
        """One block's ``du [B, L, h]``, ``[(index, grad)]`` of the SSM parameters and ``dD``."""
        need, L = ctx.needs_input_grad, u.shape[1]
        n = fast_fft_size(2 * L)
        with torch.enable_grad():
            k = dplr_kernel(*ssm, None, n=ctx.n_kernel, L=L)  # [dirs, h, L]
        G = torch.fft.rfft(dy.transpose(-1, -2), n=n)  # [B, h, n//2+1]
        du = None
        if need[0]:
            du = torch.fft.irfft(G * _conv_spectrum(k.detach(), D, n, ctx.causal).conj(), n=n)[..., :L].transpose(
                -1, -2
            )
        if not any(need[1:7]):
            return du, [], None
        G *= torch.fft.rfft(u.transpose(-1, -2), n=n).conj()
        dkc = torch.fft.irfft(G.sum(0), n=n)  # [h, n]
        del G
        gs = []
        if k.requires_grad:
            dk = dkc.new_zeros(k.shape)  # [dirs, h, L]
            dk[0] = dkc[:, :L]
            if not ctx.causal:
                dk[1, :, : L - 1] = dkc[:, n - L + 1 :].flip(-1)  # dK'_m = dk_c[n-1-m]; K'_{L-1} unused
            wanted = [i for i, t in enumerate(ssm) if t.requires_grad]
            gs = list(zip(wanted, torch.autograd.grad(k, [ssm[i] for i in wanted], dk)))
        return du, gs, (dkc[:, 0] if need[6] else None)
