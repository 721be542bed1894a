"""The ``linear`` mixer (Linear Transformer, Katharopoulos et al. 2020) against a dense reference
written here; float64, rtol=1e-9, atol=1e-10. The ops it calls: tests/ops/test_linear_attention.py.
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.nn.rotary import RotaryEmbedding
from reference import assert_matches_reference

TOL = dict(rtol=1e-9, atol=1e-10)


def dense_linear_attention(fq, fk, v, causal, eps=1e-6):
    """o_i = sum_j A_ij v_j / (sum_j A_ij + eps), A = fq fk^T (masked to j <= i when causal)."""
    A = fq @ fk.transpose(-1, -2)
    if causal:
        L = A.shape[-1]
        A = A * torch.ones(L, L, dtype=torch.bool).tril()
    return (A @ v) / (A.sum(-1, keepdim=True) + eps)


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
    A = fq @ fk.transpose(-1, -2)  # [B, H, L, L]
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
