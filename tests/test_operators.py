"""Neural operators: Fourier layers against DFT-matrix references (float64, values and gradients),
resolution invariance, and the FNO / low-rank / U-Net models' contracts."""

import math

import pytest
import torch

from longseq.operators import (
    FNO,
    FNO1d,
    FNO2d,
    LowRankOperator,
    SpectralConv1d,
    SpectralConv2d,
    UNet2d,
    build_operator,
    relative_l2,
)
from longseq.operators.naive import spectral_conv1d_naive, spectral_conv2d_naive

TOL = dict(rtol=1e-10, atol=1e-12)  # float64: the FFT and the DFT sums differ by rounding only


@pytest.mark.parametrize("n", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("modes", [1, 3, 8, 17])  # up to and past the Nyquist limit n//2 + 1
def test_spectral_conv1d_matches_dft(n, modes):
    torch.manual_seed(n * 100 + modes)
    layer = SpectralConv1d(3, 2, modes).double()
    with torch.no_grad():  # random complex weights, not only the positive init
        layer.weight.normal_()
    x = torch.randn(4, 3, n, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    w = torch.view_as_complex(layer.weight)
    x2 = x.detach().clone().requires_grad_(True)
    w2 = w.detach().clone().requires_grad_(True)
    ref = spectral_conv1d_naive(x2, w2, modes)
    torch.testing.assert_close(y, ref, **TOL)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, layer.weight), g)
    rx, rw = torch.autograd.grad(ref, (x2, w2), g)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(torch.view_as_complex(gw), rw, **TOL)


@pytest.mark.parametrize("n1,n2", [(1, 1), (6, 5), (7, 8), (16, 16)])
@pytest.mark.parametrize("modes", [2, 4, 9])
def test_spectral_conv2d_matches_dft(n1, n2, modes):
    torch.manual_seed(n1 * 31 + n2 + modes)
    layer = SpectralConv2d(2, 3, modes, modes).double()
    with torch.no_grad():
        layer.weight1.normal_()
        layer.weight2.normal_()
    x = torch.randn(2, 2, n1, n2, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    x2 = x.detach().clone().requires_grad_(True)
    w1 = torch.view_as_complex(layer.weight1).detach().clone().requires_grad_(True)
    w2 = torch.view_as_complex(layer.weight2).detach().clone().requires_grad_(True)
    ref = spectral_conv2d_naive(x2, w1, w2, modes, modes)
    torch.testing.assert_close(y, ref, **TOL)
    g = torch.randn_like(y)
    # on a 1-row grid no negative first-axis frequency exists: weight2 is unused by both
    gx, g1, g2 = torch.autograd.grad(y, (x, layer.weight1, layer.weight2), g, allow_unused=True)
    rx, r1, r2 = torch.autograd.grad(ref, (x2, w1, w2), g, allow_unused=True)
    torch.testing.assert_close(gx, rx, **TOL)
    torch.testing.assert_close(torch.view_as_complex(g1), r1, **TOL)
    if g2 is None or r2 is None:
        assert n1 == 1 and (g2 is None or not g2.any()) and (r2 is None or not r2.any())
    else:
        torch.testing.assert_close(torch.view_as_complex(g2), r2, **TOL)


def test_complex_gradient_convention():
    """torch's gradient of a real loss w.r.t. a complex tensor is dL/dRe + i dL/dIm: the real-stored
    weight's gradient is exactly that pair (checked by finite differences)."""
    torch.manual_seed(0)
    layer = SpectralConv1d(1, 1, 3).double()
    x = torch.randn(1, 1, 9, dtype=torch.float64)
    loss = lambda: (layer(x) ** 3).sum()
    (g,) = torch.autograd.grad(loss(), layer.weight)
    eps = 1e-6
    with torch.no_grad():
        layer.weight[0, 0, 1, 1] += eps
        up = loss()
        layer.weight[0, 0, 1, 1] -= 2 * eps
        down = loss()
        layer.weight[0, 0, 1, 1] += eps
    assert abs(float((up - down) / (2 * eps)) - float(g[0, 0, 1, 1])) < 1e-6


def _bandlimited_1d(n, freqs, coef):
    x = torch.arange(n, dtype=torch.float64) / n
    out = torch.zeros(coef.shape[0], coef.shape[1], n, dtype=torch.float64)
    for j, f in enumerate(freqs):
        out += coef[..., j, :1] * torch.cos(2 * math.pi * f * x) + coef[..., j, 1:] * torch.sin(2 * math.pi * f * x)
    return out


@pytest.mark.parametrize("s", [32, 45])
def test_fourier_layer_resolution_invariant_1d(s):
    """One Fourier layer (K v + W v, GELU) on a function with frequencies below ``modes``, sampled at s
    and 2s: the outputs agree at the shared points x_j = j / s to 1e-10."""
    torch.manual_seed(s)
    width, modes = 4, 8
    k, w = SpectralConv1d(width, width, modes).double(), torch.nn.Conv1d(width, width, 1).double()
    coef = torch.randn(2, width, modes, 2, dtype=torch.float64)
    layer = lambda v: torch.nn.functional.gelu(k(v) + w(v))
    y1 = layer(_bandlimited_1d(s, range(modes), coef))
    y2 = layer(_bandlimited_1d(2 * s, range(modes), coef))
    assert (y1 - y2[..., ::2]).abs().max() < 1e-10
    assert y1.abs().max() > 1e-2  # not trivially zero


def test_fourier_layer_resolution_invariant_2d():
    torch.manual_seed(1)
    width, modes, s = 3, 5, 24
    k = SpectralConv2d(width, width, modes).double()
    f = [(a, b) for a in range(-modes + 1, modes) for b in range(modes)]
    c = torch.randn(2, width, len(f), 2, dtype=torch.float64)

    def field(n):
        x = torch.arange(n, dtype=torch.float64) / n
        X, Y = torch.meshgrid(x, x, indexing="ij")
        out = torch.zeros(2, width, n, n, dtype=torch.float64)
        for j, (a, b) in enumerate(f):
            th = 2 * math.pi * (a * X + b * Y)
            out += c[..., j, :1, None] * torch.cos(th) + c[..., j, 1:, None] * torch.sin(th)
        return out

    y1, y2 = k(field(s)), k(field(2 * s))
    assert (y1 - y2[..., ::2, ::2]).abs().max() < 1e-10
    assert y1.abs().max() > 1e-2


def test_fno_resolution_invariant_on_bandlimited_input():
    """The whole FNO1d (lift, 4 layers, projection) on a band-limited periodic input: GELU creates high
    frequencies, so s vs 2s agree only approximately; they agree well, and far better than at s / 2."""
    torch.manual_seed(0)
    m = FNO1d(modes=8, width=16).double()
    x = lambda n: torch.sin(2 * math.pi * torch.arange(n, dtype=torch.float64) / n)[None] * 0.5
    y256, y512 = m(x(256)), m(x(512))
    assert (y256 - y512[:, ::2]).abs().max() / y512.abs().max() < 1e-3


@pytest.mark.parametrize(
    "model",
    [
        lambda: FNO1d(modes=4, width=8),
        lambda: FNO2d(modes=3, width=6),
        lambda: LowRankOperator(1, width=8, rank=2),
        lambda: LowRankOperator(2, width=8, rank=2),
        lambda: UNet2d(width=4, levels=2),
    ],
)
def test_operator_models_shapes_grads_any_resolution(model):
    torch.manual_seed(0)
    m = model()
    dim = m.dim
    for n in [16, 33] if dim == 1 else [9, 17]:
        x = torch.randn(3, *([n] * dim))
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        loss = m.loss(y, torch.randn_like(x))
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        m.zero_grad()


def test_fno_channels_last_and_multichannel():
    m = FNO2d(modes=3, width=6, in_channels=2, out_channels=3)
    y = m(torch.randn(2, 10, 10, 2))
    assert y.shape == (2, 10, 10, 3)


def test_padding_is_a_fraction_of_the_domain():
    m = FNO2d(modes=3, width=4)
    assert [m.pad_cells(n) for n in (85, 141, 421)] == [9, 15, 45]


def test_lowrank_kernel_against_dense_quadrature():
    """K v(x) = mean_y kappa(x, y) v(y), kappa(x, y) = sum_j phi_j(x) psi_j(y)^T built densely."""
    torch.manual_seed(0)
    m = LowRankOperator(1, width=5, rank=3).double()
    kern = m.kernels[0]
    feats = torch.randn(2, 11, 2, dtype=torch.float64)
    v = torch.randn(2, 11, 5, dtype=torch.float64)
    phi = kern.phi(feats).view(2, 11, 3, 5)
    psi = kern.psi(feats).view(2, 11, 3, 5)
    kappa = torch.einsum("bxjc,byjd->bxycd", phi, psi)  # [B, x, y, d_out, d_in]
    dense = torch.einsum("bxycd,byd->bxc", kappa, v) / 11
    torch.testing.assert_close(kern(v, feats), dense, rtol=1e-12, atol=1e-12)


def test_relative_l2_and_normalizer():
    p, t = torch.tensor([[3.0, 4.0], [0.0, 1.0]]), torch.tensor([[0.0, 4.0], [0.0, 2.0]])
    torch.testing.assert_close(relative_l2(p, t, "none"), torch.tensor([3 / 4, 1 / 2]))
    m = FNO1d(modes=2, width=4, normalizer={"in_mean": 1.0, "in_std": 2.0, "out_mean": 5.0, "out_std": 3.0})
    m2 = FNO1d(modes=2, width=4)
    m2.load_state_dict(m.state_dict())
    x = torch.randn(2, 8)
    torch.testing.assert_close(m(x), m2((x - 1.0) / 2.0) * 3.0 + 5.0)


def test_save_load_roundtrip(tmp_path):
    import longseq

    m = FNO2d(modes=3, width=4, normalizer={"in_mean": 7.0, "in_std": 4.0})
    m.save(tmp_path / "m")
    m2 = longseq.load(tmp_path / "m")
    x = torch.randn(1, 9, 9)
    torch.testing.assert_close(m(x), m2(x))


def test_bad_input():
    m = FNO1d(modes=2, width=4)
    with pytest.raises(ValueError, match="expected inputs"):
        m(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="floating point"):
        m(torch.ones(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="no mask"):
        m(torch.randn(2, 8), torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown operator"):
        build_operator("gno", 1)
    with pytest.raises(ValueError, match="channels"):
        SpectralConv1d(2, 2, 3)(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="padding"):
        FNO(2, padding=2.0)
