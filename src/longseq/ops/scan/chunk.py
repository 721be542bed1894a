"""Parallel scan for diagonal linear recurrences ``h_t = a_t * h_{t-1} + b_t``.

This is the recurrence of S5 (Smith et al. 2023, "Simplified State Space Layers for Sequence
Modeling", Section 2.2 / Appendix H: the associative operator
``(a_i, b_i) • (a_j, b_j) = (a_j a_i, a_j b_i + b_j)``), of diagonal SSMs in recurrent form and of
gated linear RNNs. :func:`linear_scan` evaluates it with a *chunked* parallel scan written in
torch, without a Python loop over time steps:

1. the sequence is cut into chunks of ``chunk`` steps; inside every chunk (all chunks at once) a
   log-depth Hillis–Steele scan of the associative operator gives each position's state from a
   zero start and the product of the ``a`` up to it — ``log2(chunk)`` vectorised steps;
2. the chunk summaries (product of ``a``, final state) form a recurrence of length
   ``L / chunk``, solved by the same function recursively (so the depth is
   ``O(log L)`` and the work ``O(L log chunk)``);
3. each chunk adds ``prod(a up to t) * (state entering the chunk)``.

Backward is the adjoint recurrence run backwards with the same scan (a custom autograd
function), so only ``a`` and the states ``h`` are saved — no log-depth intermediates:
``g_t = dL/dh_t + conj(a_{t+1}) g_{t+1}``, ``dL/db_t = g_t``, ``dL/da_t = g_t conj(h_{t-1})``,
``dL/dh_0 = conj(a_0) g_0`` (torch's conjugate-Wirtinger convention for the holomorphic map).

Constant decay (``a`` of shape ``[P]``, e.g. S5's ``Λ̄``, time-invariant SSMs): the recurrence is
linear time-invariant, so inside a chunk of ``T`` steps it is a product with the lower-triangular
Toeplitz matrix ``M_p[t, s] = a_p^{t-s}`` (``t >= s``) per state — one batched (complex) matmul of
``O(L T P)`` work instead of ``log2 T`` elementwise passes — and only the ``L / T`` chunk-end
states go through the log-depth scan; each position then adds ``a^{t+1} (state entering its
chunk)``. Its backward is the adjoint recurrence (``g_t = dL/dh_t + conj(a) g_{t+1}``) through
the same chunked product, and ``dL/da = Σ_t g_t conj(h_{t-1})``: only ``h`` is saved (the
caller's readout keeps it anyway), no ``[..., L, P]`` copy of ``a``.

Works for real and complex dtypes, time-varying or constant ``a`` (anything broadcastable to
``b``), any length (no padding needed by the caller).
"""

from __future__ import annotations

import torch

__all__ = ["linear_scan", "lti_scan"]

DEFAULT_CHUNK = 64


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All states and the final state of ``h_t = a_t * h_{t-1} + b_t``.

    Args:
        a: decay, broadcastable to ``b`` (e.g. ``[P]`` constant, or ``[..., L, P]``).
        b: input ``[..., L, P]`` (time is dim -2).
        h0: initial state ``[..., P]`` (``h_{-1}``); zeros if None.
        reverse: run from the last step to the first (``h_t = a_t h_{t+1} + b_t``).
        chunk: chunk length of the parallel scan (a power of two >= 2).

    Returns:
        ``(h [..., L, P], h_last [..., P])``; ``h_last`` is the state after the last step taken.
    """
    if b.dim() < 2:
        raise ValueError(f"linear_scan: b must be [..., L, P], got shape {tuple(b.shape)}")
    if chunk < 2 or chunk & (chunk - 1):
        raise ValueError(f"linear_scan: chunk must be a power of two >= 2, got {chunk}")
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    const = a.numel() == a.shape[-1] if a.dim() else False
    if const:  # time-invariant decay [P]: chunked Toeplitz products
        b = b.to(dtype)
        a = a.to(dtype).reshape(-1).expand(b.shape[-1])
    else:
        a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    if h0 is None:
        h0 = torch.zeros(b.shape[:-2] + b.shape[-1:], dtype=dtype, device=b.device)
    else:
        h0 = h0.to(dtype).expand(b.shape[:-2] + b.shape[-1:])
    if reverse:
        b = b.flip(-2)
        a = a if const else a.flip(-2)
    h = (_LinearScanConst if const else _LinearScan).apply(a, b, h0, chunk)
    if reverse:
        h = h.flip(-2)
        return h, h[..., 0, :]
    return h, h[..., -1, :]


def lti_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """States ``h [..., L, P]`` of ``h_t = a h_{t-1} + b_t`` for a constant decay ``a [P]``, without
    autograd (the chunked Toeplitz products of :class:`_LinearScanConst`): for custom backward passes
    that run the recurrence and its adjoint themselves. ``reverse``: ``h_t = a h_{t+1} + b_t``."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    b = b.to(dtype)
    if h0 is None:
        h0 = b.new_zeros(b.shape[:-2] + b.shape[-1:])
    with torch.no_grad():
        if not reverse:
            return _scan_const(a.to(dtype), b, h0.to(dtype), chunk)
        return _scan_const(a.to(dtype), b.flip(-2), h0.to(dtype), chunk).flip(-2)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, chunk):
        with torch.no_grad():
            h = _scan(a, b, h0, chunk)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk = chunk
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        # adjoint: g_t = grad_h_t + conj(a_{t+1}) g_{t+1}, run backwards in time
        a_next = torch.cat([a[..., 1:, :], torch.zeros_like(a[..., :1, :])], -2).conj()
        g = _scan(a_next.flip(-2), grad_h.flip(-2), torch.zeros_like(h0), ctx.chunk).flip(-2)
        h_prev = torch.cat([h0.unsqueeze(-2), h[..., :-1, :]], -2)
        grad_a = g * h_prev.conj()
        grad_h0 = a[..., 0, :].conj() * g[..., 0, :]
        return grad_a, g, grad_h0, None


class _LinearScanConst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, chunk):
        h = _scan_const(a, b, h0, chunk)
        ctx.save_for_backward(a, h, h0)
        ctx.chunk = chunk
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        # adjoint: g_t = grad_h_t + conj(a) g_{t+1}, the same time-invariant recurrence backwards
        g = _scan_const(a.conj(), grad_h.flip(-2), torch.zeros_like(h0), ctx.chunk).flip(-2)
        grad_a = (g[..., 1:, :] * h[..., :-1, :].conj()).reshape(-1, a.shape[-1]).sum(0)
        grad_a = grad_a + (g[..., 0, :] * h0.conj()).reshape(-1, a.shape[-1]).sum(0)
        return grad_a, g, a.conj() * g[..., 0, :], None


def _scan_const(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, chunk: int) -> torch.Tensor:
    """Time-invariant scan (no autograd): a [P], b [..., L, P], h0 [..., P] -> h [..., L, P]."""
    L, P = b.shape[-2:]
    T = min(chunk, L)
    n = -(-L // T)
    if n * T > L:  # b = 0 after the end: the extra states are dropped
        b = torch.cat([b, b.new_zeros(b.shape[:-2] + (n * T - L, P))], -2)
    pows = torch.cat([torch.ones_like(a)[None], torch.cumprod(a.expand(T, P), 0)])  # a^t, t = 0..T  [T+1, P]
    t = torch.arange(T, device=b.device)
    lag = t[:, None] - t[None, :]  # [T, T]
    M = pows[lag.clamp(min=0)] * (lag >= 0)[..., None]  # a^{t-s} (t >= s)  [T, T, P]
    bc = b.reshape(b.shape[:-2] + (n, T, P))  # [..., n, T, P]
    h = torch.einsum("tsp,...nsp->...ntp", M, bc)  # from zero, per chunk
    if n > 1:  # chunk-end states -> state entering each chunk (log-depth scan over n)
        last = h[..., -1, :]  # [..., n, P]
        ends = _scan(pows[T].expand(last.shape), last, h0, max(2, min(chunk, 64)))
        enter = torch.cat([h0.unsqueeze(-2), ends[..., :-1, :]], -2)  # [..., n, P]
    else:
        enter = h0.unsqueeze(-2)
    h = h.addcmul_(pows[1:], enter.unsqueeze(-2))  # + a^{t+1} h_enter
    return h.reshape(b.shape)[..., :L, :]


def _scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, chunk: int) -> torch.Tensor:
    """Chunked scan (no autograd). a, b: [..., L, P]; h0: [..., P] -> h [..., L, P]."""
    L = b.shape[-2]
    if L <= chunk:
        A, h = _hillis_steele(a, b)
        return h + A * h0.unsqueeze(-2)
    n = -(-L // chunk)
    pad = n * chunk - L
    if pad:  # a = 1, b = 0 after the end: extra steps only repeat the last state
        a = torch.cat([a, a.new_ones(a.shape[:-2] + (pad, a.shape[-1]))], -2)
        b = torch.cat([b, b.new_zeros(b.shape[:-2] + (pad, b.shape[-1]))], -2)
    shape = b.shape[:-2] + (n, chunk, b.shape[-1])
    A, h = _hillis_steele(a.reshape(shape), b.reshape(shape))  # [..., n, chunk, P]
    ends = _scan(A[..., -1, :], h[..., -1, :], h0, chunk)  # state after each chunk [..., n, P]
    enter = torch.cat([h0.unsqueeze(-2), ends[..., :-1, :]], -2)  # state entering each chunk
    h = h + A * enter.unsqueeze(-2)
    return h.reshape(b.shape)[..., :L, :]


def _hillis_steele(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive scan along dim -2 from a zero state: (prod a_{<=t}, h_t). log2(L) steps."""
    L = b.shape[-2]
    a, b = a.clone(), b.clone()
    d = 1
    while d < L:  # right-hand sides are computed from the old values before the in-place update
        b[..., d:, :] += a[..., d:, :] * b[..., :-d, :]
        a[..., d:, :] = a[..., d:, :] * a[..., :-d, :]
        d *= 2
    return a, b
