"""Causal linear-attention ops (naive / chunk / recurrent) and the ``linear`` mixer (Linear Transformer).

References are dense: the L x L kernel matrix ``phi(Q) phi(K)^T``, causal-masked and normalised
row-wise, written plainly here. Float64; values and gradients agree to rtol=1e-9, atol=1e-10
(different summation orders only).
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.nn.rotary import RotaryEmbedding
from longseq.ops.linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_naive,
    linear_attention_recurrent,
)
from reference import assert_matches_reference

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


@pytest.mark.parametrize("L,Dk,Dv,chunk", [(1, 8, 8, 16), (63, 60, 12, 16), (65, 12, 60, 64), (200, 16, 16, 64),
                                           (1000, 8, 8, 128)])
def test_chunk_and_recurrent_equal_dense(L, Dk, Dv, chunk):
    q, k, v = features(2, 2, L, Dk, Dv)
    ref = dense_linear_attention(q, k, v, causal=True)
    torch.testing.assert_close(linear_attention_naive(q, k, v), ref, **TOL)
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
    o1, s = linear_attention_chunk(q[:, :, :split], k[:, :, :split], v[:, :, :split], chunk_size=16,
                                   output_final_state=True)
    rest = (q[:, :, split:], k[:, :, split:], v[:, :, split:])
    o2, _ = linear_attention_chunk(*rest, chunk_size=16, initial_state=s)
    torch.testing.assert_close(torch.cat([o1, o2], 2), ref, **TOL)
    torch.testing.assert_close(linear_attention_naive(*rest, initial_state=s), ref[:, :, split:], **TOL)
    o3, _ = linear_attention_recurrent(*rest, initial_state=s)
    torch.testing.assert_close(o3, ref[:, :, split:], **TOL)


def test_bidirectional_equals_dense():
    q, k, v = features(2, 2, 65, 60, 12)
    ref = dense_linear_attention(q, k, v, causal=False)
    torch.testing.assert_close(linear_attention_bidirectional(q, k, v), ref, **TOL)
    torch.testing.assert_close(linear_attention_naive(q, k, v, causal=False), ref, **TOL)


def test_zero_denominator_gives_zero_not_nan():
    q, k, v = features(1, 1, 5, 4, 4)
    o, _ = linear_attention_chunk(q, torch.zeros_like(k), v, eps=0.0, chunk_size=2)
    assert torch.equal(o, torch.zeros_like(o))


# ------------------------------------------------------------------------------- the mixer
def mixer_reference(m, x, mask=None):
    """Linear Transformer layer written plainly: elu+1 maps, dense masked kernel matrix, normalised."""
    B, L, D = x.shape
    H, Dh = m.num_heads, m.head_dim
    q, k, v = m.qkv(x).split(D, dim=-1)
    q, k, v = (t.reshape(B, L, H, Dh).transpose(1, 2) for t in (q, k, v))
    if m.rope is not None:
        rope = RotaryEmbedding(Dh)
        q, k = rope(q), rope(k)
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    A = fq @ fk.transpose(-1, -2)                                    # [B, H, L, L]
    allowed = torch.ones(L, L, dtype=torch.bool)
    if m.causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    A = A * allowed
    o = (A @ v) / (A.sum(-1, keepdim=True) + 1e-6)
    y = m.out(o.transpose(1, 2).reshape(B, L, D))
    return y if mask is None else y * mask[..., None]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("L", [1, 63, 65, 300])
def test_mixer_equals_reference_values_and_grads(causal, rope, L):
    torch.manual_seed(L)
    m = longseq.mixers.build("linear", 24, num_heads=2, causal=causal, rope=rope, chunk_size=16).double()
    x = torch.randn(2, L, 24, dtype=torch.float64)
    mask = torch.arange(L)[None] < torch.tensor([L, max(1, L // 2)])[:, None]
    assert_matches_reference(m, mixer_reference, x, mask, **TOL)


def test_mixer_head_dim_60_prefill_then_steps():
    m = longseq.mixers.build("linear", 120, num_heads=2, causal=True, rope=True, chunk_size=16).double()
    x = torch.randn(1, 70, 120, dtype=torch.float64)
    y = m(x)
    y1, s = m(x[:, :33], return_state=True)
    ys = [y1]
    for t in range(33, 70):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, 1), y, **TOL)
    assert m.state_size(70) == 2 * 60 * 61 and s["S"].shape == (1, 2, 60, 60)


def test_numerical_hygiene_large_inputs_and_bf16():
    for causal in (True, False):
        m = longseq.mixers.build("linear", 32, num_heads=2, causal=causal, chunk_size=16)
        x = (torch.randn(2, 100, 32) * 100).requires_grad_()
        y = m(x)
        y.square().mean().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        yb = m.to(torch.bfloat16)(torch.randn(2, 50, 32, dtype=torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_invalid_options():
    with pytest.raises(ValueError, match="chunk_size"):
        longseq.mixers.build("linear", 16, chunk_size=0)
