"""longseq.ops.fftconv against its naive twin (the dense Toeplitz sums of eq. (1)/(2)), float64:
values and gradients of ``u``, the kernels and ``D`` (rtol 1e-9 / atol 1e-10 values, 1e-8
gradients), a second backward through a retained graph, bfloat16 smoke runs; the channel-group
loops exercised with groups of 2 channels ("sliced")."""

import pytest
import torch

import longseq.ops.fftconv.fft as fftconv
from longseq.ops.fftconv import conv_naive, diag_ssm_conv, fast_fft_size, fft_conv, grouped_kernel_conv, kernel_conv
from longseq.ops.fftconv.fft import _FFTConv, _GroupedKernelConv
from longseq.ops.vandermonde import vandermonde, vandermonde_naive, vandermonde_transposed

from .twins import bf16_smoke, check_twin

GTOL = dict(rtol=1e-8, atol=1e-8)
TOL = dict(rtol=1e-9, atol=1e-10)


@pytest.fixture(params=[False, True], ids=["one-slice", "sliced"])
def slices(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(fftconv, "_channel_group", lambda batch, n: 2)


def test_conv_naive_is_the_double_sum():
    """The twin itself against eq. (1)/(2) written as loops over lags."""
    u, k, D = (
        torch.randn(2, 3, 11, dtype=torch.float64),
        torch.randn(2, 3, 11, dtype=torch.float64),
        torch.randn(3, dtype=torch.float64),
    )
    y = D[:, None] * u
    for lag in range(11):
        y = y + torch.nn.functional.pad(k[0, :, lag : lag + 1] * u[..., : 11 - lag], (lag, 0))
        if lag < 10:
            y = y + torch.nn.functional.pad(k[1, :, lag : lag + 1] * u[..., lag + 1 :], (0, lag + 1))
    torch.testing.assert_close(conv_naive(u, k, D), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "L,Lk,bidirectional",
    [
        (1, 1, False),
        (1, 1, True),
        (17, 17, False),
        (17, 17, True),
        (189, 189, False),
        (189, 189, True),
        (100, 7, False),
    ],
)
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
    return vandermonde_naive(w[:, c], log_z[c], L)  # [2, g, L]


@pytest.mark.parametrize("L,C", [(1, 2), (23, 1), (23, 2), (130, 2), (489, 1), (489, 2)])
def test_grouped_kernel_conv_values_and_grads(L, C, slices):
    """Channels-last ``u [B, L, H]``, kernels built per channel group from ``(w, log z)`` (slowly decaying
    modes: long kernels): values and the gradients of ``u``, ``D``, ``w``, ``log z`` (moved here from
    tests/test_dss_grouped.py)."""
    torch.manual_seed(L)
    H, N = 5, 3
    u = torch.randn(2, L, H, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)
    w = torch.randn(C, H, N, dtype=torch.complex128)
    log_z = torch.complex(-0.05 * torch.rand(H, N, dtype=torch.float64) - 1e-3, torch.randn(H, N, dtype=torch.float64))

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
    assert (
        bf16_smoke(
            lambda u, D, w, lz: grouped_kernel_conv(u, lambda c, L, w, lz: _kernel_fn(c, L, w, lz).float(), (w, lz), D),
            [ul, D, w, log_z],
        )
        == "runs"
    )


# ---------------------------------------------------------------------------- from tests/test_ssm_kernels.py
def rand_modes(H, N, C=()):
    log_z = torch.complex(-torch.rand(H, N, dtype=torch.float64) * 0.3, torch.randn(H, N, dtype=torch.float64))
    w = torch.randn(*C, H, N, dtype=torch.complex128)
    return w, log_z


def naive_kernel(w, log_z, L):
    """K_l = Re sum_n w_n z_n^l with z^l materialised by repeated multiplication."""
    z = torch.exp(log_z)
    powers = [torch.ones_like(z)]
    for _ in range(L - 1):
        powers.append(powers[-1] * z)
    P = torch.stack(powers, -1)  # [H, N, L]
    return (w.unsqueeze(-1) * P).sum(-2).real


def naive_causal_conv(u, k):
    L = u.shape[-1]
    y = torch.zeros_like(u)
    for l in range(L):
        for m in range(l + 1):
            y[..., l] += k[..., l - m] * u[..., m]
    return y


@pytest.mark.parametrize("L", [1, 17, 489, 1047])
def test_vandermonde_matches_materialised_powers(L):
    w, log_z = rand_modes(3, 5)
    torch.testing.assert_close(vandermonde(w, log_z, L), naive_kernel(w, log_z, L), **TOL)


def test_vandermonde_batched_and_gradients():
    w, log_z = rand_modes(2, 3, C=(2,))
    w.requires_grad_(True)
    log_z.requires_grad_(True)
    torch.autograd.gradcheck(lambda w, z: vandermonde(w, z, 23), (w, log_z))


@pytest.mark.parametrize("L", [1, 17, 130])
def test_vandermonde_transposed_is_final_state(L):
    _, log_z = rand_modes(3, 4)
    u = torch.randn(2, 3, L, dtype=torch.float64)
    x = torch.zeros(2, 3, 4, dtype=torch.complex128)
    for l in range(L):  # x_l = z x_{l-1} + u_l
        x = torch.exp(log_z) * x + u[..., l, None]
    torch.testing.assert_close(vandermonde_transposed(u, log_z), x, **TOL)


@pytest.mark.parametrize("L", [1, 2, 17, 63])
def test_fft_conv_causal_and_bidirectional(L):
    u = torch.randn(2, 3, L, dtype=torch.float64)
    k, kb = torch.randn(3, L, dtype=torch.float64), torch.randn(3, L, dtype=torch.float64)
    torch.testing.assert_close(fft_conv(u, k), naive_causal_conv(u, k), **TOL)
    # backward kernel: y_l += sum_{m > l} kb[m - l - 1] u_m  == causal conv on the reversed sequence
    back = torch.nn.functional.pad(naive_causal_conv(u.flip(-1), kb), (1, 0))[..., :L].flip(-1)
    torch.testing.assert_close(fft_conv(u, k, kb), naive_causal_conv(u, k) + back, **TOL)


def test_fast_fft_size():
    for n in [1, 2, 7, 978, 2094, 32768, 32769]:
        m = fast_fft_size(n)
        assert m >= n
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
    assert fast_fft_size(32768) == 32768 and fast_fft_size(978) == 1000


@pytest.mark.parametrize("block_size", [None, 3, 7, 64])
@pytest.mark.parametrize("L", [1, 50])
def test_diag_ssm_conv_with_state_matches_recurrence(L, block_size):
    w, log_z = rand_modes(3, 4)
    u = torch.randn(2, 3, L, dtype=torch.float64)
    x0 = torch.randn(2, 3, 4, dtype=torch.complex128)
    for state in (None, x0):
        x = torch.zeros_like(x0) if state is None else state
        ys = []
        for l in range(L):
            x = torch.exp(log_z) * x + u[..., l, None]
            ys.append((w * x).real.sum(-1))
        y, xL = diag_ssm_conv(u, w, log_z, state, return_state=True, block_size=block_size)
        torch.testing.assert_close(y, torch.stack(ys, -1), **TOL)
        torch.testing.assert_close(xL, x, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_custom_backward_gradcheck(bidirectional):
    u = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    kb = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    f = (lambda u, k, kb: fft_conv(u, k, kb)) if bidirectional else (lambda u, k, kb: fft_conv(u, k) + 0 * kb.sum())
    torch.autograd.gradcheck(f, (u, k, kb))
    short = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)  # kernel shorter than L
    torch.autograd.gradcheck(lambda u, k: fft_conv(u, k), (u, short))
