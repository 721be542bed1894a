"""longseq.ssm: initialisations, discretisation and the S4D / DSS kernel modules, each against a plain
formula written here (float64, rtol 1e-9 / atol 1e-10 unless stated). The ops they call (Vandermonde
products, FFT convolution): tests/ops/."""

import math

import pytest
import torch

from longseq.ops.fftconv.fft import diag_ssm_conv
from longseq.ssm.discretize import discretize
from longseq.ssm.init import diagonal_init, log_dt_init
from longseq.ssm.kernels import DiagSSMKernel, DSSKernel

TOL = dict(rtol=1e-9, atol=1e-10)


def rand_modes(H, N, C=()):
    log_z = torch.complex(-torch.rand(H, N, dtype=torch.float64) * 0.3, torch.randn(H, N, dtype=torch.float64))
    w = torch.randn(*C, H, N, dtype=torch.complex128)
    return w, log_z


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
        S = (
            -torch.tril(q[:, None] * q[None, :], -1)
            - torch.diag(k + 1)
            + torch.sqrt(k + 0.5)[:, None] * torch.sqrt(k + 0.5)
        )
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
    K = torch.stack([2 * (C * dA**l * dB).sum(-1).real for l in range(L)], -1)  # [C, H, L]
    torch.testing.assert_close(ker.kernel(L), K, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("L", [1, 17, 200])
def test_dss_kernels_match_paper_formulas(L):
    torch.manual_seed(2)
    ker = DSSKernel(2, 6, variant="exp").double()
    lam = torch.complex(-torch.exp(ker.Lambda_re), ker.Lambda_im)
    dt = torch.exp(ker.log_dt)[:, None]
    W = torch.view_as_complex(ker.W)
    l = torch.arange(L, dtype=torch.float64)
    K = (
        (W[..., None] * ((torch.exp(lam * dt) - 1) / lam)[..., None] * torch.exp(lam[..., None] * dt[..., None] * l))
        .sum(-2)
        .real
    )
    torch.testing.assert_close(ker.kernel(L), K, rtol=1e-8, atol=1e-9)

    l_max = 250
    ker = DSSKernel(2, 6, variant="softmax", l_max=l_max).double()
    with torch.no_grad():
        ker.Lambda_re[0, :3] = torch.tensor([0.02, 0.3, 1.0])  # growing modes: the flipped form
    lam = torch.complex(ker.Lambda_re, ker.Lambda_im)
    dt = torch.exp(ker.log_dt)[:, None]
    W = torch.view_as_complex(ker.W)
    P = lam[..., None] * dt[..., None] * torch.arange(l_max, dtype=torch.float64)  # [H, N, l_max]
    soft = torch.exp(P - P.real.amax(-1, keepdim=True))
    soft = soft / soft.sum(-1, keepdim=True)  # complex row-softmax over positions
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
