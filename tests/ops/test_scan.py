"""The chunked parallel scan against a plain loop over time (values and gradients, float64)."""

import pytest
import torch

from longseq.ops.scan import linear_scan, linear_scan_naive

TOL = dict(rtol=1e-10, atol=1e-12)


def _inputs(L, P, complex_, const_a, seed=0):
    g = torch.Generator().manual_seed(seed)
    dt = torch.complex128 if complex_ else torch.float64
    a_shape = (P,) if const_a else (2, L, P)
    a = torch.rand(a_shape, generator=g, dtype=torch.float64) * 0.9 + 0.1
    if complex_:
        a = a * torch.exp(1j * torch.randn(a_shape, generator=g, dtype=torch.float64))
    b = torch.randn(2, L, P, generator=g, dtype=dt)
    h0 = torch.randn(2, P, generator=g, dtype=dt)
    return a, b, h0


@pytest.mark.parametrize("L", [1, 2, 7, 64, 65, 300, 1047])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("const_a", [False, True])
def test_scan_matches_loop(L, complex_, const_a):
    a, b, h0 = _inputs(L, 3, complex_, const_a)
    h, last = linear_scan(a, b, h0, chunk=4)
    h_ref, last_ref = linear_scan_naive(a, b, h0)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(last, last_ref, **TOL)


@pytest.mark.parametrize("L", [5, 70])
def test_reverse_and_default_chunk(L):
    a, b, h0 = _inputs(L, 4, True, False)
    h, first = linear_scan(a, b, h0, reverse=True)
    h_ref, first_ref = linear_scan_naive(a.flip(-2), b.flip(-2), h0)
    torch.testing.assert_close(h, h_ref.flip(-2), **TOL)
    torch.testing.assert_close(first, first_ref, **TOL)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("L", [1, 33, 130])
def test_scan_gradients(complex_, L):
    a, b, h0 = _inputs(L, 3, complex_, False, seed=1)
    for t in (a, b, h0):
        t.requires_grad_(True)
    w = torch.randn(2, L, 3, dtype=b.dtype)
    wl = torch.randn(2, 3, dtype=b.dtype)

    def loss(fn):
        h, last = fn(a, b, h0)
        return ((h * w).sum() + (last * wl).sum()).real

    g = torch.autograd.grad(loss(lambda *x: linear_scan(*x, chunk=4)), (a, b, h0))
    g_ref = torch.autograd.grad(loss(linear_scan_naive), (a, b, h0))
    for x, y in zip(g, g_ref):
        torch.testing.assert_close(x, y, **TOL)


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("L,chunk", [(1, 4), (33, 4), (130, 8), (64, 64)])
@pytest.mark.parametrize("reverse", [False, True])
def test_constant_a_chunked_toeplitz_values_and_gradients(complex_, L, chunk, reverse):
    """Constant decay [P] takes the chunked Toeplitz path: values and gradients of a, b, h0 vs the loop."""
    a, b, h0 = _inputs(L, 3, complex_, True, seed=4)
    for t in (a, b, h0):
        t.requires_grad_(True)
    w = torch.randn(2, L, 3, dtype=b.dtype)
    wl = torch.randn(2, 3, dtype=b.dtype)
    flip = (lambda t: t.flip(-2)) if reverse else (lambda t: t)

    def loss(h, last):
        return ((h * w).sum() + (last * wl).sum()).real

    h, last = linear_scan(a, b, h0, reverse=reverse, chunk=chunk)
    h_ref, last_ref = linear_scan_naive(a, flip(b), h0)
    h_ref = flip(h_ref)
    torch.testing.assert_close(h, h_ref, **TOL)
    torch.testing.assert_close(last, last_ref, **TOL)
    g = torch.autograd.grad(loss(h, last), (a, b, h0))
    g_ref = torch.autograd.grad(loss(h_ref, last_ref), (a, b, h0))
    for x, y in zip(g, g_ref):
        torch.testing.assert_close(x, y, **TOL)


def test_scan_gradcheck_small():
    a, b, h0 = _inputs(9, 2, True, False, seed=2)
    for t in (a, b, h0):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk=2)[0], (a, b, h0))
    a, b, h0 = _inputs(9, 2, True, True, seed=2)  # constant a: chunked Toeplitz path
    for t in (a, b, h0):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk=4)[0], (a, b, h0))


def test_scan_constant_a_gradient_is_reduced():
    a, b, h0 = _inputs(20, 3, True, True, seed=3)
    a.requires_grad_(True)
    linear_scan(a, b, h0, chunk=4)[0].abs().sum().backward()
    assert a.grad.shape == a.shape


def test_bad_chunk():
    with pytest.raises(ValueError, match="chunk"):
        linear_scan(torch.ones(3), torch.ones(1, 5, 3), chunk=3)


# ---------------------------------------------------------------------------- fast op vs naive twin
from longseq.ops.scan.chunk import _LinearScan, _LinearScanConst  # noqa: E402

from .twins import bf16_smoke, check_twin  # noqa: E402


@pytest.mark.parametrize("L", [1, 13, 131])
@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("const_a", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_twin(L, complex_, const_a, reverse):
    """Values, gradients of ``a, b, h0`` and a retained-graph second backward, odd lengths, chunk 4,
    forward and reversed (the naive loop on flipped inputs); rtol 1e-10."""
    a, b, h0 = _inputs(L, 3, complex_, const_a, seed=L)
    flip = (lambda t: t.flip(-2)) if reverse else (lambda t: t)

    def naive(a, b, h0):
        h, last = linear_scan_naive(a if const_a else flip(a), flip(b), h0)
        return flip(h), last

    check_twin(
        lambda a, b, h0: linear_scan(a, b, h0, reverse=reverse, chunk=4),
        naive,
        [a, b, h0],
        **TOL,
        functions=(_LinearScanConst if const_a else _LinearScan,),
    )


@pytest.mark.parametrize("const_a", [False, True])
def test_linear_scan_bf16_smoke(const_a):
    """bfloat16 ``a, b, h0``: the scan runs (promoted as given) and gives finite values and gradients."""
    a, b, h0 = _inputs(37, 3, False, const_a)
    assert bf16_smoke(lambda a, b, h0: linear_scan(a, b, h0, chunk=4), [a, b, h0]) == "runs"
