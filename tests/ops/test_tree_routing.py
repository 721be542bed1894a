"""longseq.ops.tree_routing (Treeformer's path gathers, one level at a time) against their naive twins
(all rows gathered at once), float64: values and the gradients of the queries / weights and the
node table (repeated indices accumulate), rtol 1e-12, torch's gradcheck, a second backward through
a retained graph, bfloat16 smoke runs."""

import pytest
import torch

from longseq.ops.tree_routing import path_logits, path_logits_naive, path_mix, path_mix_naive
from longseq.ops.tree_routing.fused import _PathLogits, _PathMix

from .twins import bf16_smoke, check_twin

TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("M,P,T", [(1, 1, 1), (9, 3, 4), (31, 5, 7)])
def test_path_gathers_twin(M, P, T):
    torch.manual_seed(M)
    q, table, p = (
        torch.randn(M, 5, dtype=torch.float64),
        torch.randn(T, 5, dtype=torch.float64),
        torch.rand(M, P, dtype=torch.float64),
    )
    idx = torch.randint(0, T, (M, P))
    check_twin(path_logits, path_logits_naive, [q, table, idx], **TOL, functions=(_PathLogits,))
    check_twin(path_mix, path_mix_naive, [p, table, idx], **TOL, functions=(_PathMix,))


def test_path_gathers_gradcheck():
    torch.manual_seed(0)
    q = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    table = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    p = torch.rand(9, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 4, (9, 3))
    assert torch.autograd.gradcheck(path_logits, (q, table, idx))
    assert torch.autograd.gradcheck(path_mix, (p, table, idx))


def test_path_gathers_bf16_smoke():
    idx = torch.randint(0, 4, (9, 3))
    assert bf16_smoke(path_logits, [torch.randn(9, 5), torch.randn(4, 5), idx]) == "runs"
    assert bf16_smoke(path_mix, [torch.rand(9, 3), torch.randn(4, 5), idx]) == "runs"
