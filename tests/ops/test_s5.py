"""longseq.ops.s5.s5_ssm (S5's stateless SSM, hand-written adjoint scans) against its naive twin
``s5_ssm_naive`` (the recurrence unrolled), float64: values and the gradients of ``u, Λ̄, B̄, C, D``
(rtol 1e-9 / atol 1e-10), causal and bidirectional, odd lengths, scan chunks of 4 and 64, a second
backward through a retained graph; bfloat16 input raises a ValueError naming the dtypes (the mixer runs its
SSM in float32 for half inputs)."""

import pytest
import torch

from longseq.ops.s5 import s5_ssm, s5_ssm_naive
from longseq.ops.s5.fused import _S5SSM

from .twins import bf16_smoke, check_twin


def _inputs(L, H=4, P2=3, dirs=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    Lbar = torch.polar(
        0.5 + 0.45 * torch.rand(P2, generator=g, dtype=torch.float64), torch.randn(P2, generator=g, dtype=torch.float64)
    )  # |Λ̄| < 1
    Bbar = torch.randn(P2, H, generator=g, dtype=torch.complex128)
    C = torch.randn(dirs, H, P2, 2, generator=g, dtype=torch.float64)
    D = torch.randn(H, generator=g, dtype=torch.float64)
    u = torch.randn(2, L, H, generator=g, dtype=torch.float64)
    return [u, Lbar, Bbar, C, D]


@pytest.mark.parametrize("L,chunk", [(1, 4), (13, 4), (77, 64)])
@pytest.mark.parametrize("dirs", [1, 2])
def test_s5_ssm_twin(L, chunk, dirs):
    check_twin(
        lambda *a: s5_ssm(*a, chunk=chunk),
        s5_ssm_naive,
        _inputs(L, dirs=dirs, seed=L),
        rtol=1e-9,
        atol=1e-10,
        functions=(_S5SSM,),
    )


def test_s5_ssm_bf16_smoke():
    out = bf16_smoke(lambda *a: s5_ssm(*a, chunk=4), _inputs(16, dirs=2))
    assert isinstance(out, ValueError) and "dtype" in str(out), out
