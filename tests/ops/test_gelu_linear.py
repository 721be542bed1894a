"""longseq.ops.gelu_linear.gelu_linear (the S4 / S4D block outputs and S5's gates) against its naive
twin ``gelu_linear_naive`` (the autograd composition), float64.

Blocks of 10 rows over 37 x 3 rows (the last block partial), strided input, values and the
gradients of the input, weight and bias (rtol 1e-10)."""

import pytest
import torch
import torch.nn.functional as F

from longseq.ops.gelu_linear import gelu_linear, gelu_linear_naive

TOL = dict(rtol=1e-10, atol=1e-12)


def reference(y, lin, glu, gate):
    return gelu_linear_naive(y, lin, glu=glu, gate=gate)


@pytest.mark.parametrize("glu,gate", [(False, None), (True, None), (False, "output"), (False, "input")])
def test_gelu_linear_matches_autograd(glu, gate):
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 12 if gate else 24).double()
    y = torch.randn(3, 37, 12, dtype=torch.float64).transpose(0, 1).requires_grad_()  # strided [37, 3, 12]
    out = gelu_linear(y, lin, glu=glu, gate=gate, rows=10)
    ref = reference(y, lin, glu, gate)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    inputs = [y, lin.weight, lin.bias]
    for a, b in zip(torch.autograd.grad((out * g).sum(), inputs), torch.autograd.grad((ref * g).sum(), inputs)):
        torch.testing.assert_close(a, b, **TOL)


def test_gelu_linear_without_bias_and_frozen_weight():
    lin = torch.nn.Linear(8, 8, bias=False).double().requires_grad_(False)
    y = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    out = gelu_linear(y, lin, rows=2)
    (dy,) = torch.autograd.grad(out.sum(), [y])
    (dy_ref,) = torch.autograd.grad(lin(F.gelu(y)).sum(), [y])
    torch.testing.assert_close(out, lin(F.gelu(y)), **TOL)
    torch.testing.assert_close(dy, dy_ref, **TOL)


def test_head_option_errors():
    lin = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="gate must be"):
        gelu_linear(torch.randn(2, 4), lin, gate="both")
    with pytest.raises(ValueError, match="exclusive"):
        gelu_linear(torch.randn(2, 4), lin, glu=True, gate="input")


# ---------------------------------------------------------------------------- retained graph, bf16
from longseq.ops.gelu_linear.fused import _GeluLinear  # noqa: E402

from .twins import bf16_smoke, check_twin  # noqa: E402


@pytest.mark.parametrize("glu,gate", [(False, None), (True, None), (False, "output"), (False, "input")])
def test_gelu_linear_twin(glu, gate):
    """Values, gradients of ``y``, weight and bias, a second backward through a retained graph."""
    torch.manual_seed(1)
    lin = torch.nn.Linear(12, 12 if gate else 24).double()
    y = torch.randn(37, 3, 12, dtype=torch.float64)

    def fast(y, weight, bias):
        return gelu_linear(y, _Lin(weight, bias), glu=glu, gate=gate, rows=10)

    def naive(y, weight, bias):
        return gelu_linear_naive(y, _Lin(weight, bias), glu=glu, gate=gate)

    check_twin(fast, naive, [y, lin.weight.detach(), lin.bias.detach()], **TOL, functions=(_GeluLinear,))


class _Lin:
    """A stand-in for ``nn.Linear`` holding plain tensors (so that the weights can be test leaves)."""

    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias


def test_gelu_linear_bf16_smoke():
    lin = torch.nn.Linear(12, 24)
    assert (
        bf16_smoke(
            lambda y, w, b: gelu_linear(y, _Lin(w, b), glu=True, rows=10),
            [torch.randn(37, 12), lin.weight.detach(), lin.bias.detach()],
        )
        == "runs"
    )
