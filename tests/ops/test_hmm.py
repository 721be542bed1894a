"""longseq.ops.hmm.hmm_forward (hand-written backward) against the plain-autograd reference
hmm_forward_naive, in float64 on fresh random inputs: values and the gradients of every input."""

import pytest
import torch

from longseq.ops.hmm import hmm_forward, hmm_forward_naive
from longseq.ops.hmm.forward import _HMMForward

from .twins import check_twin


def _inputs(B, L, N, r, masked):
    log_init = torch.randn(N, dtype=torch.float64).log_softmax(-1).requires_grad_(True)
    log_em = (2 * torch.randn(B, L, N, dtype=torch.float64)).requires_grad_(True)
    if r is None:
        mats = [torch.rand(N, N, dtype=torch.float64).softmax(-1).requires_grad_(True)]
    else:
        U = torch.rand(N, r, dtype=torch.float64)
        V = torch.rand(N, r, dtype=torch.float64)
        U = U / (U @ V.sum(0))[:, None]  # rows of U V^T sum to 1
        mats = [U.requires_grad_(True), V.T.contiguous().requires_grad_(True)]
    mask = None
    if masked:
        lengths = torch.randint(1, L + 1, (B,))
        lengths[0] = L
        mask = torch.arange(L)[None] < lengths[:, None]
    return log_init, log_em, mats, mask


@pytest.mark.parametrize("r", [None, 3])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("want_pred", [False, True])
def test_matches_naive_values_and_gradients(r, masked, want_pred):
    torch.manual_seed(3)
    B, L, N = 4, 7, 5
    log_init, log_em, mats, mask = _inputs(B, L, N, r, masked)
    leaves = [log_init, log_em, *mats]
    z, P = hmm_forward(log_init, log_em, mats, mask, want_pred=want_pred)
    z_ref, P_ref = hmm_forward_naive(log_init, log_em, mask, mats)
    torch.testing.assert_close(z, z_ref, rtol=1e-12, atol=1e-12)
    gz = torch.randn(B, dtype=torch.float64)
    out, ref = (z * gz).sum(), (z_ref * gz).sum()
    if want_pred:
        torch.testing.assert_close(P, P_ref, rtol=1e-12, atol=1e-12)
        gP = torch.randn_like(P)
        out, ref = out + (P * gP).sum(), ref + (P_ref * gP).sum()
    else:
        assert P is None
    g = torch.autograd.grad(out, leaves)
    g_ref = torch.autograd.grad(ref, leaves)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_only_pred_output_used():
    torch.manual_seed(4)
    log_init, log_em, mats, _ = _inputs(2, 5, 4, 2, False)
    _, P = hmm_forward(log_init, log_em, mats, want_pred=True)
    _, P_ref = hmm_forward_naive(log_init, log_em, None, mats)
    g = torch.autograd.grad(P.square().sum(), [log_init, log_em, *mats])
    g_ref = torch.autograd.grad(P_ref.square().sum(), [log_init, log_em, *mats])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_float32_long_sequence_finite():
    torch.manual_seed(5)
    log_init, log_em, mats, _ = _inputs(2, 1000, 8, 4, False)
    z, _ = hmm_forward(
        log_init.float().detach().requires_grad_(),
        log_em.float().detach().requires_grad_(),
        [m.float().detach() for m in mats],
    )
    z64, _ = hmm_forward(log_init, log_em, mats)
    assert bool(torch.isfinite(z).all())
    torch.testing.assert_close(z.double(), z64.detach(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("r", [None, 3])
def test_twin_check_with_retained_graph(r):
    """The shared twin check (values, every gradient, a second backward through a retained graph)."""
    torch.manual_seed(5)
    log_init, log_em, mats, mask = _inputs(3, 6, 4, r, True)
    inputs = [t.detach() for t in (log_init, log_em, *mats)] + [mask]

    def fast(li, le, *rest):
        return hmm_forward(li, le, list(rest[:-1]), rest[-1], want_pred=True)

    def naive(li, le, *rest):
        return hmm_forward_naive(li, le, rest[-1], list(rest[:-1]))

    check_twin(fast, naive, inputs, functions=(_HMMForward,), rtol=1e-10, atol=1e-10)
