"""longseq.ops.linear_attention: the chunk-parallel, recurrent and bidirectional forms against the
naive twin (``linear_attention_naive``, the dense kernel matrix) and against the L x L formula
written plainly here. Float64; values and gradients agree to rtol=1e-9, atol=1e-10 (different
summation orders only). The ``linear`` mixer: tests/test_linear_attention.py.
"""

import pytest
import torch
import torch.nn.functional as F

from longseq.ops.linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_naive,
    linear_attention_recurrent,
)

TOL = dict(rtol=1e-9, atol=1e-10)


def dense_linear_attention(fq, fk, v, causal, eps=1e-6):
    """o_i = sum_j A_ij v_j / (sum_j A_ij + eps), A = fq fk^T (masked to j <= i when causal)."""
    A = fq @ fk.transpose(-1, -2)
    if causal:
        L = A.shape[-1]
        A = A * torch.ones(L, L, dtype=torch.bool).tril()
    return (A @ v) / (A.sum(-1, keepdim=True) + eps)


def features(B, H, L, Dk, Dv):
    q = F.elu(torch.randn(B, H, L, Dk, dtype=torch.float64)) + 1
    k = F.elu(torch.randn(B, H, L, Dk, dtype=torch.float64)) + 1
    v = torch.randn(B, H, L, Dv, dtype=torch.float64)
    return q, k, v


@pytest.mark.parametrize(
    "L,Dk,Dv,chunk", [(1, 8, 8, 16), (63, 60, 12, 16), (65, 12, 60, 64), (200, 16, 16, 64), (1000, 8, 8, 128)]
)
def test_chunk_and_recurrent_equal_dense(L, Dk, Dv, chunk):
    q, k, v = features(2, 2, L, Dk, Dv)
    ref = dense_linear_attention(q, k, v, causal=True)
    torch.testing.assert_close(linear_attention_naive(q, k, v)[0], ref, **TOL)
    o, (S, z) = linear_attention_chunk(q, k, v, chunk_size=chunk, output_final_state=True)
    torch.testing.assert_close(o, ref, **TOL)
    torch.testing.assert_close(S, k.transpose(-1, -2) @ v, **TOL)
    torch.testing.assert_close(z, k.sum(2), **TOL)
    if L <= 200:
        o_r, (S_r, z_r) = linear_attention_recurrent(q, k, v, output_final_state=True)
        torch.testing.assert_close(o_r, ref, **TOL)
        torch.testing.assert_close(S_r, S, **TOL)
        torch.testing.assert_close(z_r, z, **TOL)


def test_chunk_gradients_equal_dense():
    q, k, v = (t.requires_grad_() for t in features(2, 3, 67, 12, 10))
    g = torch.randn(2, 3, 67, 10, dtype=torch.float64)
    grads_ref = torch.autograd.grad((dense_linear_attention(q, k, v, True) * g).sum(), (q, k, v))
    grads = torch.autograd.grad((linear_attention_chunk(q, k, v, chunk_size=16)[0] * g).sum(), (q, k, v))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("split", [1, 16, 30])
def test_initial_state_continues_the_sequence(split):
    q, k, v = features(2, 2, 67, 12, 6)
    ref = dense_linear_attention(q, k, v, causal=True)
    o1, s = linear_attention_chunk(
        q[:, :, :split], k[:, :, :split], v[:, :, :split], chunk_size=16, output_final_state=True
    )
    rest = (q[:, :, split:], k[:, :, split:], v[:, :, split:])
    o2, _ = linear_attention_chunk(*rest, chunk_size=16, initial_state=s)
    torch.testing.assert_close(torch.cat([o1, o2], 2), ref, **TOL)
    o4, s4 = linear_attention_naive(*rest, initial_state=s, output_final_state=True)
    torch.testing.assert_close(o4, ref[:, :, split:], **TOL)
    _, s_all = linear_attention_chunk(q, k, v, chunk_size=16, output_final_state=True)
    for a, b in zip(s4, s_all):
        torch.testing.assert_close(a, b, **TOL)
    o3, _ = linear_attention_recurrent(*rest, initial_state=s)
    torch.testing.assert_close(o3, ref[:, :, split:], **TOL)


def test_bidirectional_equals_dense():
    q, k, v = features(2, 2, 65, 60, 12)
    ref = dense_linear_attention(q, k, v, causal=False)
    torch.testing.assert_close(linear_attention_bidirectional(q, k, v), ref, **TOL)
    torch.testing.assert_close(linear_attention_naive(q, k, v, causal=False)[0], ref, **TOL)


def test_zero_denominator_gives_zero_not_nan():
    q, k, v = features(1, 1, 5, 4, 4)
    o, _ = linear_attention_chunk(q, torch.zeros_like(k), v, eps=0.0, chunk_size=2)
    assert torch.equal(o, torch.zeros_like(o))


# ---------------------------------------------------------------------------- retained graph, bf16
from .twins import bf16_smoke, check_twin  # noqa: E402


@pytest.mark.parametrize("L,chunk", [(1, 4), (37, 8)])
def test_chunk_and_bidirectional_twins(L, chunk):
    """No hand-written Function here, but the same twin check: values, gradients, a second backward."""
    q, k, v = features(2, 2, L, 6, 5)
    S0, z0 = torch.rand(2, 2, 6, 5, dtype=torch.float64), torch.rand(2, 2, 6, dtype=torch.float64)
    check_twin(
        lambda q, k, v, S0, z0: linear_attention_chunk(
            q, k, v, chunk_size=chunk, initial_state=(S0, z0), output_final_state=True
        ),
        lambda q, k, v, S0, z0: linear_attention_naive(q, k, v, initial_state=(S0, z0), output_final_state=True),
        [q, k, v, S0, z0],
        **TOL,
    )
    check_twin(
        linear_attention_bidirectional,
        lambda q, k, v: linear_attention_naive(q, k, v, causal=False)[0],
        [q, k, v],
        **TOL,
    )


def test_bf16_smoke():
    q, k, v = features(2, 2, 37, 6, 5)
    assert bf16_smoke(lambda q, k, v: linear_attention_chunk(q, k, v, chunk_size=8)[0], [q, k, v]) == "runs"
    assert bf16_smoke(linear_attention_bidirectional, [q, k, v]) == "runs"
