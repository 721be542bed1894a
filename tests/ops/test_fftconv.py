"""longseq.ops.fftconv against its naive twin (the dense Toeplitz sums of eq. (1)/(2)), float64:
values and gradients of ``u``, the kernels and ``D`` (rtol 1e-9 / atol 1e-10 values, 1e-8
gradients), a second backward through a retained graph, bfloat16 smoke runs; the channel-group
loops exercised with groups of 2 channels ("sliced")."""

import pytest
import torch

import longseq.ops.fftconv.fft as fftconv
from longseq.ops.fftconv import conv_naive, grouped_kernel_conv, kernel_conv
from longseq.ops.fftconv.fft import _FFTConv, _GroupedKernelConv
from longseq.ops.vandermonde import vandermonde_naive

from .twins import bf16_smoke, check_twin

GTOL = dict(rtol=1e-8, atol=1e-8)


@pytest.fixture(params=[False, True], ids=["one-slice", "sliced"])
def slices(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(fftconv, "_channel_group", lambda batch, n: 2)


def test_conv_naive_is_the_double_sum():
    """The twin itself against eq. (1)/(2) written as loops over lags."""
    u, k, D = torch.randn(2, 3, 11, dtype=torch.float64), torch.randn(2, 3, 11, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y = D[:, None] * u
    for lag in range(11):
        y = y + torch.nn.functional.pad(k[0, :, lag : lag + 1] * u[..., : 11 - lag], (lag, 0))
        if lag < 10:
            y = y + torch.nn.functional.pad(k[1, :, lag : lag + 1] * u[..., lag + 1 :], (0, lag + 1))
    torch.testing.assert_close(conv_naive(u, k, D), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L,Lk,bidirectional", [(1, 1, False), (1, 1, True), (17, 17, False), (17, 17, True),
                                                (189, 189, False), (189, 189, True), (100, 7, False)])
def test_kernel_conv_values_and_grads(L, Lk, bidirectional, slices):
    """Also a causal kernel shorter than the input (the H3 shift SSM's FIR)."""
    torch.manual_seed(L)
    H = 5
    u = torch.randn(3, H, L, dtype=torch.float64)
    k = torch.randn(2 if bidirectional else 1, H, Lk, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)
    check_twin(kernel_conv, conv_naive, [u, k, D], **GTOL, functions=(_FFTConv,))


def _kernel_fn(c, L, w, log_z):
    """A differentiable kernel builder for the grouped convolution: two Vandermonde kernels."""
    return vandermonde_naive(w[:, c], log_z[c], L)                      # [2, g, L]


@pytest.mark.parametrize("L,C", [(1, 2), (23, 1), (23, 2), (130, 2)])
def test_grouped_kernel_conv_values_and_grads(L, C, slices):
    """Channels-last ``u [B, L, H]``, kernels built per channel group from ``(w, log z)``: values and
    the gradients of ``u``, ``D``, ``w``, ``log z``."""
    torch.manual_seed(L)
    H, N = 5, 3
    u = torch.randn(2, L, H, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)
    w = torch.randn(C, H, N, dtype=torch.complex128)
    log_z = torch.complex(-0.5 * torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64))

    def fast(u, D, w, log_z):
        return grouped_kernel_conv(u, _kernel_fn, (w, log_z), D)

    def naive(u, D, w, log_z):
        return conv_naive(u.transpose(1, 2), _kernel_fn(slice(None), L, w, log_z), D).transpose(1, 2)

    check_twin(fast, naive, [u, D, w, log_z], **GTOL, functions=(_GroupedKernelConv,))


def test_bf16_smoke():
    """bfloat16 input: both convolutions compute in float32 and cast back (no half FFT on CPU)."""
    u, k, D = torch.randn(2, 3, 37, dtype=torch.float64), torch.randn(2, 3, 37, dtype=torch.float64), torch.randn(3)
    assert bf16_smoke(kernel_conv, [u, k, D]) == "runs"
    w = torch.randn(2, 3, 4, dtype=torch.complex128)
    log_z = torch.complex(-0.5 * torch.rand(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    ul = torch.randn(2, 37, 3)
    assert bf16_smoke(lambda u, D, w, lz: grouped_kernel_conv(u, lambda c, L, w, lz: _kernel_fn(c, L, w, lz).float(),
                                                              (w, lz), D), [ul, D, w, log_z]) == "runs"
