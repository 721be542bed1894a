"""longseq.ssm: initialisations, discretisation, Vandermonde kernel, FFT convolution, block FFT
with carried state — each against a plain formula written here (float64, rtol 1e-9 / atol 1e-10
unless stated)."""

import math

import pytest
import torch

from longseq.ssm.discretize import discretize
from longseq.ops.fftconv.fft import diag_ssm_conv, fast_fft_size, fft_conv
from longseq.ssm.init import diagonal_init, log_dt_init
from longseq.ops.vandermonde import vandermonde, vandermonde_transposed
from longseq.ssm.kernels import DiagSSMKernel, DSSKernel

TOL = dict(rtol=1e-9, atol=1e-10)


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
    P = torch.stack(powers, -1)                                  # [H, N, L]
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
    for l in range(L):                                           # x_l = z x_{l-1} + u_l
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


@pytest.mark.parametrize("init", ["lin", "inv", "legs", "real"])
def test_inits(init):
    N = 8
    A, B = diagonal_init(N, init)
    n = torch.arange(N // 2, dtype=torch.float64)
    expected = {
        "lin": torch.complex(torch.full_like(n, -0.5), math.pi * n),
        "inv": torch.complex(torch.full_like(n, -0.5), N / math.pi * (N / (2 * n + 1) - 1)),
        "real": torch.complex(-(n + 1), torch.zeros_like(n)),
    }
    if init == "legs":
        # eigenvalues of the normal part S = A_legs + P P^T of HiPPO-LegS (textbook formula)
        k = torch.arange(N, dtype=torch.float64)
        q = torch.sqrt(2 * k + 1)
        S = -torch.tril(q[:, None] * q[None, :], -1) - torch.diag(k + 1) + torch.sqrt(k + 0.5)[:, None] * torch.sqrt(k + 0.5)
        ev = torch.linalg.eigvals(S)
        ev = ev[ev.imag > 0]
        torch.testing.assert_close(torch.sort(A.imag).values, torch.sort(ev.imag).values)
        assert torch.allclose(A.real, torch.full_like(A.real, -0.5))
    else:
        torch.testing.assert_close(A, expected[init])
        assert (B == 1).all()
    with pytest.raises(ValueError, match="init"):
        diagonal_init(N, "hippo")
    with pytest.raises(ValueError, match="d_state"):
        diagonal_init(7, "lin")


def test_log_dt_range():
    ld = log_dt_init(1000, 1e-3, 1e-1)
    assert ld.min() >= math.log(1e-3) and ld.max() <= math.log(1e-1)
    assert ld.max() - ld.min() > 0.9 * (math.log(1e-1) - math.log(1e-3))


def test_discretize_formulas():
    A = torch.complex(-torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    B = torch.randn(4, dtype=torch.complex128)
    dt = torch.tensor(0.3, dtype=torch.float64)
    log_dA, dB = discretize(A, B, dt, "zoh")
    torch.testing.assert_close(torch.exp(log_dA), torch.exp(dt * A))
    torch.testing.assert_close(dB, (torch.exp(dt * A) - 1) / A * B)
    log_dA, dB = discretize(A, B, dt, "bilinear")
    I = 1.0
    torch.testing.assert_close(torch.exp(log_dA), (I + dt * A / 2) / (I - dt * A / 2))
    torch.testing.assert_close(dB, dt * B / (I - dt * A / 2))
    with pytest.raises(ValueError, match="disc"):
        discretize(A, B, dt, "euler")


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [1, 17, 489, 1047])
def test_s4d_kernel_is_C_dA_pow_dB(disc, L):
    """K_l = 2 Re C dA^l dB materialised from the continuous parameters (small N, H)."""
    torch.manual_seed(1)
    ker = DiagSSMKernel(3, 8, channels=2, init="inv", disc=disc).double()
    A, B, C, dt = ker.continuous()
    dtA = dt[:, None] * A
    if disc == "zoh":
        dA, dB = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B
    else:
        dA, dB = (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] * B / (1 - dtA / 2)
    K = torch.stack([2 * (C * dA ** l * dB).sum(-1).real for l in range(L)], -1)  # [C, H, L]
    torch.testing.assert_close(ker.kernel(L), K, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("L", [1, 17, 200])
def test_dss_kernels_match_paper_formulas(L):
    torch.manual_seed(2)
    ker = DSSKernel(2, 6, variant="exp").double()
    lam = torch.complex(-torch.exp(ker.Lambda_re), ker.Lambda_im)
    dt = torch.exp(ker.log_dt)[:, None]
    W = torch.view_as_complex(ker.W)
    l = torch.arange(L, dtype=torch.float64)
    K = (W[..., None] * ((torch.exp(lam * dt) - 1) / lam)[..., None] * torch.exp(lam[..., None] * dt[..., None] * l)).sum(-2).real
    torch.testing.assert_close(ker.kernel(L), K, rtol=1e-8, atol=1e-9)

    l_max = 250
    ker = DSSKernel(2, 6, variant="softmax", l_max=l_max).double()
    with torch.no_grad():
        ker.Lambda_re[0, :3] = torch.tensor([0.02, 0.3, 1.0])    # growing modes: the flipped form
    lam = torch.complex(ker.Lambda_re, ker.Lambda_im)
    dt = torch.exp(ker.log_dt)[:, None]
    W = torch.view_as_complex(ker.W)
    P = lam[..., None] * dt[..., None] * torch.arange(l_max, dtype=torch.float64)  # [H, N, l_max]
    soft = torch.exp(P - P.real.amax(-1, keepdim=True))
    soft = soft / soft.sum(-1, keepdim=True)                      # complex row-softmax over positions
    K = (W[..., None] / lam[..., None] * soft).sum(-2).real[..., :L]
    torch.testing.assert_close(ker.kernel(L), K, rtol=1e-7, atol=1e-10)
    with pytest.raises(ValueError, match="l_max"):
        ker.kernel(l_max + 1)
    with pytest.raises(ValueError, match="l_max"):
        DSSKernel(2, 6, variant="softmax")


@pytest.mark.parametrize("dt", [1e-3, 1e-1])
@pytest.mark.parametrize("init", ["lin", "inv", "legs", "real"])
def test_no_overflow_at_64k_float32(dt, init):
    L = 65536
    ker = DiagSSMKernel(1, 64, init=init)
    with torch.no_grad():
        ker.log_dt.fill_(math.log(dt))
    k = ker.kernel(L)
    assert torch.isfinite(k).all()
    u = torch.randn(1, 1, L) * 100
    w, log_z = ker.modes()
    y, x = diag_ssm_conv(u, w[0], log_z, return_state=True, block_size=16384)
    assert torch.isfinite(y).all() and torch.isfinite(x).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_conv_custom_backward_gradcheck(bidirectional):
    u = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    kb = torch.randn(3, 11, dtype=torch.float64, requires_grad=True)
    f = (lambda u, k, kb: fft_conv(u, k, kb)) if bidirectional else (lambda u, k, kb: fft_conv(u, k) + 0 * kb.sum())
    torch.autograd.gradcheck(f, (u, k, kb))
    short = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)       # kernel shorter than L
    torch.autograd.gradcheck(lambda u, k: fft_conv(u, k), (u, short))
