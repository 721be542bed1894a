"""longseq.ops.s4_conv.s4_conv (S4's kernel by Cauchy sums + Woodbury and the FFT convolution, per
channel block, recomputing backward) against its naive twin ``s4_conv_naive`` (the generating
function solved densely at the roots of unity, then the dense Toeplitz product), float64: values
and the gradients of ``u, Λ, P, B, C̃, Δ, D`` (rtol 1e-8 / atol 1e-9), causal and bidirectional,
odd lengths, ``l_max`` above the length, channel blocks of 2 over 5 channels, a second backward
through a retained graph; bfloat16 input raises a ValueError naming the dtypes (the mixer computes in
float32 for half inputs)."""

import pytest
import torch

from longseq.ops.s4_conv import s4_conv, s4_conv_naive, s4_kernel_naive
from longseq.ops.s4_conv.fused import _S4Conv, dplr_kernel
from longseq.ssm.hippo import dplr_legs

from .twins import bf16_smoke, check_twin


def _params(H=5, N=8, dirs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    Lam, P, B, _ = dplr_legs(N)  # HiPPO-LegS, [N/2] each
    rep = lambda t: t.repeat(H, 1) * (1 + 0.1 * torch.randn(H, N // 2, generator=g, dtype=torch.float64))  # noqa: E731
    Ct = torch.randn(dirs, H, N // 2, generator=g, dtype=torch.complex128)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(-4, -1, generator=g))
    return [rep(Lam), rep(P), rep(B), Ct, dt, torch.randn(H, generator=g, dtype=torch.float64)]


def test_dplr_kernel_equals_dense_generating_function():
    """The Cauchy/Woodbury kernel itself against the dense solve of the twin, rtol 1e-9."""
    Lam, P, B, Ct, dt, _ = _params()
    torch.testing.assert_close(
        dplr_kernel(Lam, P, B, Ct, dt, None, n=64, L=50),
        s4_kernel_naive(Lam, P, B, Ct, dt, 64, 50),
        rtol=1e-9,
        atol=1e-10,
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L,l_max", [(1, 4), (19, 32), (64, 64)])
def test_s4_conv_twin(causal, L, l_max):
    Lam, P, B, Ct, dt, D = _params(dirs=1 if causal else 2, seed=L)
    u = torch.randn(2, L, 5, dtype=torch.float64)
    check_twin(
        lambda *a: s4_conv(*a, l_max, causal, 2),
        lambda *a: s4_conv_naive(*a, l_max, causal),
        [u, Lam, P, B, Ct, dt, D],
        rtol=1e-8,
        atol=1e-9,
        functions=(_S4Conv,),
    )


def test_s4_conv_bf16_smoke():
    Lam, P, B, Ct, dt, D = _params()
    out = bf16_smoke(lambda *a: s4_conv(*a, 32, False, 2), [torch.randn(2, 16, 5), Lam, P, B, Ct, dt, D])
    assert isinstance(out, ValueError) and "dtype" in str(out), out
