"""longseq.ops.vandermonde against its naive twins (materialised powers), in float64 (values and
gradients of every input; rtol 1e-9 / atol 1e-10 for values, 1e-8 for gradients):

* :func:`longseq.ops.vandermonde.vandermonde` (modes per channel or shared, decayed chunks
  skipped, groups processed in slices) against :func:`~longseq.ops.vandermonde.vandermonde_naive`,
  plus a second backward through a retained graph and a bfloat16 smoke run;
* :func:`longseq.ops.vandermonde.vandermonde_transposed` against ``vandermonde_transposed_naive``;
* :func:`longseq.ops.vandermonde.chunk.powers` against ``exp(i log z)``.
"""

import pytest
import torch

import longseq.ops.fftconv.fft as fftconv
import longseq.ops.vandermonde.chunk as vmod
from longseq.ops.vandermonde import (
    powers,
    vandermonde,
    vandermonde_naive,
    vandermonde_transposed,
    vandermonde_transposed_naive,
)
from longseq.ops.vandermonde.chunk import _Vandermonde

from .twins import bf16_smoke, check_twin

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
    log_z = random_modes(N if shared else (H, N))
    w = torch.randn(2, H, N, dtype=torch.complex128)
    assert vandermonde(w, log_z, L).shape == (2, H, L)
    check_twin(
        lambda w, log_z: vandermonde(w, log_z, L),
        lambda w, log_z: vandermonde_naive(w, log_z, L),
        [w, log_z],
        rtol=1e-8,
        atol=1e-8,
        functions=(_Vandermonde,),
    )


def test_vandermonde_bf16_smoke():
    """``w`` complex64 with a bfloat16 caller: the product runs in the modes' dtype (no complex half)."""
    log_z = random_modes((3, 4)).to(torch.complex64)
    w = torch.randn(3, 4, dtype=torch.complex64)
    assert bf16_smoke(lambda w, log_z: vandermonde(w, log_z, 37).to(torch.bfloat16), [w, log_z]) == "runs"


@pytest.mark.parametrize("shared", [False, True], ids=["per-channel", "shared"])
@pytest.mark.parametrize("L", [1, 300])
def test_vandermonde_transposed_is_the_state(L, shared):
    H, N = 4, 5
    log_z = random_modes(N if shared else (H, N)).requires_grad_()
    u = torch.randn(2, H, L, dtype=torch.float64, requires_grad=True)
    x = vandermonde_transposed(u, log_z)
    ref = vandermonde_transposed_naive(u, log_z)  # [2, H, N]
    torch.testing.assert_close(x, ref, **TOL)
    g = torch.randn_like(x)
    for a, b in zip(
        torch.autograd.grad((x * g.conj()).real.sum(), (u, log_z)),
        torch.autograd.grad((ref * g.conj()).real.sum(), (u, log_z)),
    ):
        torch.testing.assert_close(a, b, **GTOL)


@pytest.mark.parametrize("n,stride", [(1, 1), (64, 1), (65, 1), (1000, 3), (1025, 64)])
def test_powers_equal_direct_exponentials(n, stride):
    """``powers`` (two exact tables and a product above 64 entries) against ``exp(stride i log z)``
    formed directly in float64: values, and the gradient of ``log z`` (float64, 1e-10 relative)."""
    torch.manual_seed(n)
    log_z = torch.complex(-torch.rand(3, 5, dtype=torch.float64) * 0.05, torch.randn(3, 5, dtype=torch.float64) * 2)
    log_z.requires_grad_()
    i = torch.arange(n, dtype=torch.float64) * stride
    ref = torch.exp(log_z.unsqueeze(-1) * i)  # [3, 5, n]
    out = powers(log_z, n, stride)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(ref)
    (g_out,) = torch.autograd.grad((out * w).real.sum(), log_z)
    (g_ref,) = torch.autograd.grad((ref * w).real.sum(), log_z)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-10, atol=1e-10)
    lz32 = log_z.detach().to(torch.complex64)  # float32: ~1e-6 relative
    ref32 = torch.exp(lz32.to(torch.complex128).unsqueeze(-1) * i)  # of the rounded log z
    big = ref32.abs() > 1e-20  # above float32 underflow
    err = (powers(lz32, n, stride).to(torch.complex128) - ref32).abs() / ref32.abs()
    assert err[big].max() < 1e-5
