"""S5's stateless fused SSM (``longseq.ops.s5.s5_ssm``: one output buffer, saved states only, hand-written
adjoint scans) at lengths that are not multiples of the scan chunk, against the plainly unrolled
recurrence of tests/test_s5.py and against the stateful path (``linear_scan`` under autograd),
values and gradients of the input and every parameter, in float64. Tolerances: rtol 1e-9 / atol 1e-10
against the stateful path; rtol 1e-6 / atol 1e-7 against the unrolled recurrence at L = 1047, whose
ZOH by matrix exponential differs from the closed form in the last bits and is amplified ~100x by
the slowest modes over a thousand steps (the stateful path shows the same 2e-8 difference)."""

import pytest
import torch

from test_s5 import TOL, H, make, naive

LOOSE = dict(rtol=1e-6, atol=1e-7)


def grads(y, x, m, w):
    return torch.autograd.grad((y * w).sum(), [x] + list(m.parameters()))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 1047])
def test_fused_equals_unrolled_recurrence(causal, L):
    m = make(causal, seed=L, chunk_size=64)
    x = torch.randn(2, L, H, dtype=torch.float64, requires_grad=True)
    y, y_ref = m(x), naive(m, x)
    tol = TOL if L < 100 else LOOSE
    torch.testing.assert_close(y, y_ref, **tol)
    w = torch.randn_like(y)
    for name, a, b in zip(["x"] + [n for n, _ in m.named_parameters()], grads(y, x, m, w), grads(y_ref, x, m, w)):
        torch.testing.assert_close(a, b, **tol, msg=name)


@pytest.mark.parametrize("activation", ["half_glu1", "none"])
def test_fused_equals_stateful_path(activation):
    """Causal: the fused path (no state) and the autograd ``linear_scan`` path (``return_state``)."""
    m = make(True, seed=1, chunk_size=8, activation=activation)
    x = torch.randn(3, 77, H, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_state, _ = m(x, return_state=True)
    torch.testing.assert_close(y, y_state, **TOL)
    w = torch.randn_like(y)
    for a, b in zip(grads(y, x, m, w), grads(y_state, x, m, w)):
        torch.testing.assert_close(a, b, **TOL)


def test_right_padding_does_not_reach_real_positions():
    m = make(False, seed=2, chunk_size=8)
    x = torch.randn(2, 50, H, dtype=torch.float64)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[1, 31:] = False
    y = m(x, mask=mask)
    torch.testing.assert_close(y[1, :31], m(x[1:, :31])[0], **TOL)
    assert (y[1, 31:] == 0).all()
