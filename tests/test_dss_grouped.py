"""dss's stateless FFT path (``fftconv.grouped_kernel_conv``: kernels built per channel group inside
the convolution, never stored, rebuilt in the backward) against independent references in float64
(the convolution alone against its Toeplitz twin: tests/ops/test_fftconv.py):

* the whole dss layer (``exp`` and ``softmax``, causal and bidirectional) against the plainly
  unrolled recurrence (exp) or the directly summed softmax kernel, values and gradients of the input
  and every parameter.

Tolerances: rtol 1e-8 / atol 1e-10 (float64).
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
import longseq.ops.fftconv.fft as fftconv
from reference import assert_matches_reference

TOL = dict(rtol=1e-8, atol=1e-10)


def toeplitz_conv(u, k, D):
    """u [B, L, H], k [C, H, >=L] -> sum_{m <= l} k0[l-m] u_m (+ sum_{m > l} k1[m-l-1] u_m) + D u."""
    L = u.shape[1]
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # l - m
    T = torch.where(lag >= 0, k[0][:, lag.clamp(min=0)], 0.0)  # [H, L, L]
    if k.shape[0] == 2:
        T = T + torch.where(lag < 0, k[1][:, (-lag - 1).clamp(min=0)], 0.0)
    return torch.einsum("hlm,bmh->blh", T, u) + D * u


def naive_dss(m, u):
    """u [B, L, H] -> SSM(u) + D u: exp by the unrolled recurrences (past incl. now with W[0], strict
    future with W[1]); softmax with its kernel summed directly and a Toeplitz product."""
    kern = m.kernel
    dt = torch.exp(kern.log_dt)[:, None]
    W = torch.view_as_complex(kern.W)
    L = u.shape[1]
    if kern.variant == "softmax":
        lam = torch.complex(kern.Lambda_re, kern.Lambda_im)
        e = torch.exp(lam[..., None] * dt[..., None] * torch.arange(kern.l_max))  # [H, N, l_max]
        K = ((W / lam)[..., None] * e / e.sum(-1, keepdim=True)).sum(-2).real  # [C, H, l_max]
        return toeplitz_conv(u, K, m.D)
    lam = torch.complex(-torch.exp(kern.Lambda_re), kern.Lambda_im)
    dA, dB = torch.exp(lam * dt), (torch.exp(lam * dt) - 1) / lam

    def run(Wc, seq):  # seq [B, L, H]
        x = torch.zeros(u.shape[0], *lam.shape, dtype=lam.dtype)
        ys = []
        for t in range(L):
            x = dA * x + dB * seq[:, t, :, None]
            ys.append((Wc * x).sum(-1).real)
        return torch.stack(ys, 1)

    y = run(W[0], u)
    if not m.causal:  # strict future: reversed, shifted
        y = y + F.pad(run(W[1], u.flip(1)), (0, 0, 1, 0))[:, :L].flip(1)
    return y + m.D * u


@pytest.mark.parametrize("variant,causal", [("exp", True), ("exp", False), ("softmax", True), ("softmax", False)])
@pytest.mark.parametrize("L", [1, 17, 200])
def test_dss_layer_equals_reference(variant, causal, L, monkeypatch):
    monkeypatch.setattr(fftconv, "_channel_group", lambda batch, n: 5)  # 12 channels -> 5+5+2
    torch.manual_seed(L)
    extra = dict(l_max=211) if variant == "softmax" else {}
    m = longseq.mixers.build("dss", 12, causal=causal, d_state=4, variant=variant, **extra).double()
    with torch.no_grad():  # random, non-initial parameters
        for p in m.kernel.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, L, 12, dtype=torch.float64)
    assert_matches_reference(m, lambda m, x, mask: F.glu(m.out(F.gelu(naive_dss(m, x))), dim=-1), x, None, **TOL)


def test_dss_padding_and_state_paths_agree():
    """Right padding does not reach real positions, and the causal stateful path (block FFT with a
    state) continues the grouped stateless path."""
    torch.manual_seed(0)
    m = longseq.mixers.build("dss", 8, causal=True, d_state=4).double()
    x = torch.randn(2, 40, 8, dtype=torch.float64)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False
    y = m(x, mask=mask)
    torch.testing.assert_close(y[1, :25], m(x[1:, :25])[0], **TOL)
    y1, s = m(x[:, :17], state=m.init_state(2), return_state=True)
    y2, _ = m(x[:, 17:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), m(x), **TOL)
    mb = longseq.mixers.build("dss", 8, causal=False, d_state=4).double()
    yb = mb(x, mask=mask)
    torch.testing.assert_close(yb[1, :25], mb(x[1:, :25])[0], **TOL)
