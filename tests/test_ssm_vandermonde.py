"""The shared memory-lean SSM pieces against plain formulas written here, in float64 (values and
gradients of every input; rtol 1e-9 / atol 1e-10 for values, 1e-8 for gradients):

* :func:`longseq.ops.vandermonde.chunk.vandermonde` (modes per channel or shared, decayed chunks
  skipped, groups processed in slices) against ``Re sum_n w_n exp(l log z_n)`` materialised;
* :func:`longseq.ops.vandermonde.chunk.vandermonde_transposed` against ``sum_l z^(L-1-l) u_l``;
* :func:`longseq.ops.vandermonde.chunk.powers` against ``exp(i log z)``;
* :func:`longseq.ops.fftconv.fft.kernel_conv` (channel groups, spectra recomputed in the backward,
  skip ``D`` as a lag-0 tap) against the direct double sum of eq. (1)/(2) of :mod:`.fftconv`.
"""

import pytest
import torch

import longseq.ops.fftconv.fft as fftconv
import longseq.ops.vandermonde.chunk as vmod
from longseq.ops.fftconv.fft import kernel_conv
from longseq.ops.vandermonde.chunk import powers, vandermonde, vandermonde_transposed

TOL = dict(rtol=1e-9, atol=1e-10)
GTOL = dict(rtol=1e-8, atol=1e-8)


def random_modes(shape, slow_and_fast=True):
    """``log z`` with ``Re < 0``; one very fast mode and one very slow one so that later chunks
    keep only some of the modes."""
    log_z = torch.complex(-torch.rand(shape, dtype=torch.float64) * 0.3, torch.randn(shape, dtype=torch.float64) * 2)
    if slow_and_fast:
        log_z.real[..., 0] = -4.0
        log_z.real[..., -1] = -1e-4
    return log_z


def naive_vandermonde(w, log_z, L):
    lags = torch.arange(L, dtype=torch.float64)
    return (w.unsqueeze(-1) * torch.exp(log_z.unsqueeze(-1) * lags)).real.sum(-2)


@pytest.fixture(params=[False, True], ids=["one-slice", "sliced"])
def slices(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(vmod, "_group_size", lambda N, S, T, J: 2)
        monkeypatch.setattr(fftconv, "_channel_group", lambda batch, n: 2)


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("L", [1, 17, 489, 1047])
def test_vandermonde_values_and_grads(L, shared, slices):
    torch.manual_seed(L)
    H, N = 5, 6
    log_z = random_modes(N if shared else (H, N)).requires_grad_()
    w = torch.randn(2, H, N, dtype=torch.complex128, requires_grad=True)
    K, ref = vandermonde(w, log_z, L), naive_vandermonde(w, log_z, L)
    assert K.shape == (2, H, L)
    torch.testing.assert_close(K, ref, **TOL)
    g = torch.randn_like(K)
    for a, b in zip(torch.autograd.grad((K * g).sum(), (w, log_z)), torch.autograd.grad((ref * g).sum(), (w, log_z))):
        torch.testing.assert_close(a, b, **GTOL)


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("L", [1, 300])
def test_vandermonde_transposed_is_the_state(L, shared):
    H, N = 4, 5
    log_z = random_modes(N if shared else (H, N)).requires_grad_()
    u = torch.randn(2, H, L, dtype=torch.float64, requires_grad=True)
    x = vandermonde_transposed(u, log_z)
    lags = torch.arange(L - 1, -1, -1, dtype=torch.float64)
    ref = (u.unsqueeze(-2) * torch.exp(log_z.unsqueeze(-1) * lags)).sum(-1)                  # [2, H, N]
    torch.testing.assert_close(x, ref, **TOL)
    g = torch.randn_like(x)
    for a, b in zip(torch.autograd.grad((x * g.conj()).real.sum(), (u, log_z)),
                    torch.autograd.grad((ref * g.conj()).real.sum(), (u, log_z))):
        torch.testing.assert_close(a, b, **GTOL)


def naive_conv(u, k, D):
    """``y_l = sum_{m<=l} K_{l-m} u_m (+ sum_{m>l} K'_{m-l-1} u_m) + D u_l``, by loops over lags."""
    L = u.shape[-1]
    y = D[:, None] * u
    for lag in range(min(L, k.shape[-1])):
        y = y + torch.nn.functional.pad(k[0, :, lag : lag + 1] * u[..., : L - lag], (lag, 0))
        if k.shape[0] == 2 and lag < L - 1:
            y = y + torch.nn.functional.pad(k[1, :, lag : lag + 1] * u[..., lag + 1 :], (0, lag + 1))
    return y


@pytest.mark.parametrize("L,Lk,bidirectional", [(1, 1, False), (1, 1, True), (17, 17, False), (17, 17, True),
                                                (489, 489, False), (489, 489, True), (100, 7, False)])
def test_kernel_conv_values_and_grads(L, Lk, bidirectional, slices):
    """Also a causal kernel shorter than the input (the H3 shift SSM's FIR)."""
    torch.manual_seed(L)
    H = 5
    u = torch.randn(3, H, L, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2 if bidirectional else 1, H, Lk, dtype=torch.float64, requires_grad=True)
    D = torch.randn(H, dtype=torch.float64, requires_grad=True)
    y, ref = kernel_conv(u, k, D), naive_conv(u, k, D)
    torch.testing.assert_close(y, ref, **TOL)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad((y * g).sum(), (u, k, D)), torch.autograd.grad((ref * g).sum(), (u, k, D))):
        torch.testing.assert_close(a, b, **GTOL)


@pytest.mark.parametrize("n,stride", [(1, 1), (64, 1), (65, 1), (1000, 3), (1025, 64)])
def test_powers_equal_direct_exponentials(n, stride):
    """``powers`` (two exact tables and a product above 64 entries) against ``exp(stride i log z)``
    formed directly in float64: values, and the gradient of ``log z`` (float64, 1e-10 relative)."""
    torch.manual_seed(n)
    log_z = torch.complex(-torch.rand(3, 5, dtype=torch.float64) * 0.05, torch.randn(3, 5, dtype=torch.float64) * 2)
    log_z.requires_grad_()
    i = torch.arange(n, dtype=torch.float64) * stride
    ref = torch.exp(log_z.unsqueeze(-1) * i)                               # [3, 5, n]
    out = powers(log_z, n, stride)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    g_out, = torch.autograd.grad((out * w).real.sum(), log_z)
    g_ref, = torch.autograd.grad((ref * w).real.sum(), log_z)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-10, atol=1e-10)
    lz32 = log_z.detach().to(torch.complex64)                               # float32: ~1e-6 relative
    ref32 = torch.exp(lz32.to(torch.complex128).unsqueeze(-1) * i)          # of the rounded log z
    big = ref32.abs() > 1e-20                                               # above float32 underflow
    err = (powers(lz32, n, stride).to(torch.complex128) - ref32).abs() / ref32.abs()
    assert err[big].max() < 1e-5
