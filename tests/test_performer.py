"""Performer (FAVOR+): the fast path against the explicit random-feature product with the SAME
features, convergence to exact softmax attention as m grows, feature redraws, stabilisation.

Dense reference: ``phi(x) = exp(w^T x - |x|^2/2) / sqrt(m)`` with x = q d^(-1/4), written without
stabilisers in float64 (``variant="relu"``: ``relu(W x) + 1e-3``, the official JAX code's features), ``A = phi(Q) phi(K)^T`` materialised, causal/padding-masked and
normalised row-wise. Values and gradients agree to rtol=1e-9, atol=1e-10.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.mixers.linear_attention import draw_random_features
from longseq.nn.rotary import RotaryEmbedding
from longseq.ops.favor import favor_attention_bidirectional, favor_softmax_features
from longseq.ops.linear_attention import linear_attention_bidirectional, linear_attention_chunk
from reference import assert_matches_reference

TOL = dict(rtol=1e-9, atol=1e-10)


def plain_features(x, w, kernel):
    if kernel == "relu":
        return F.relu(x @ w.T) + 1e-3  # official JAX code: no 1/sqrt(m)
    x = x * x.shape[-1] ** -0.25
    return torch.exp(x @ w.T - 0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(w.shape[0])


def performer_reference(m, x, mask=None):
    B, L, D = x.shape
    H, Dh = m.num_heads, m.head_dim
    q, k, v = m.qkv(x).split(D, dim=-1)
    q, k, v = (t.reshape(B, L, H, Dh).transpose(1, 2) for t in (q, k, v))
    if m.rope is not None:
        rope = RotaryEmbedding(Dh)
        q, k = rope(q), rope(k)
    w = m.features
    A = plain_features(q, w, m.kernel) @ plain_features(k, w, m.kernel).transpose(-1, -2)  # [B, H, L, L]
    allowed = torch.ones(L, L, dtype=torch.bool)
    if m.causal:
        allowed = allowed.tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    A = A * allowed
    o = (A @ v) / A.sum(-1, keepdim=True)
    y = m.out(o.transpose(1, 2).reshape(B, L, D))
    return y if mask is None else y * mask[..., None]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kernel,rope", [("softmax", False), ("softmax", True), ("relu", False)])
@pytest.mark.parametrize("L", [1, 63, 65, 200])
def test_equals_explicit_feature_product_values_and_grads(causal, kernel, rope, L):
    torch.manual_seed(L)
    m = (
        longseq.mixers.build(
            "performer", 24, num_heads=2, causal=causal, variant=kernel, rope=rope, num_features=20, chunk_size=16
        )
        .double()
        .eval()
    )
    x = torch.randn(2, L, 24, dtype=torch.float64)
    mask = torch.arange(L)[None] < torch.tensor([L, max(1, L // 2)])[:, None]
    assert_matches_reference(m, performer_reference, x, mask, **TOL)


def test_head_dim_60_and_long_sequence():
    m = longseq.mixers.build("performer", 120, num_heads=2, causal=True, num_features=32, chunk_size=64).double().eval()
    x = torch.randn(1, 1000, 120, dtype=torch.float64) * 0.5
    torch.testing.assert_close(m(x), performer_reference(m, x), **TOL)


def favor_attention(q, k, v, w, causal):
    fq, _ = favor_softmax_features(q, w, is_query=True)
    fk, _ = favor_softmax_features(k, w, is_query=False)
    if causal:
        return linear_attention_chunk(fq, fk, v, chunk_size=16, eps=0.0)[0]
    return linear_attention_bidirectional(fq, fk, v, eps=0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_converges_to_softmax_attention(causal):
    """Relative error vs exact softmax(q k^T / sqrt(d)) v falls like ~1/sqrt(m) (mean of 4 draws)."""
    B, H, L, d = 1, 2, 48, 16
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64) * 0.5 for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    errors = []
    for m in (16, 256, 4096):
        errs = [
            (favor_attention(q, k, v, draw_random_features(m, d, dtype=torch.float64), causal) - exact).norm()
            / exact.norm()
            for _ in range(4)
        ]
        errors.append(float(sum(errs) / len(errs)))
    assert all(b < 0.7 * a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.06, errors


def test_mixer_converges_to_softmax_naive_with_same_weights():
    ref = longseq.mixers.build("softmax_naive", 32, num_heads=2, causal=True).double()
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    y_ref = ref(x)
    errors = []
    for m in (16, 4096):
        p = longseq.mixers.build("performer", 32, num_heads=2, causal=True, num_features=m).double().eval()
        p.load_state_dict(ref.state_dict(), strict=False)  # shares qkv / out
        errors.append(float((p(x) - y_ref).detach().norm() / y_ref.detach().norm()))
    assert errors[1] < 0.4 * errors[0] and errors[1] < 0.15, errors


def test_orthogonal_features():
    w = draw_random_features(40, 16, dtype=torch.float64)
    block = w[:16] / w[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-12)
    lengths = draw_random_features(4096, 16, dtype=torch.float64).norm(dim=1)
    assert abs(float(lengths.square().mean()) - 16) < 1.0  # rows ~ N(0, I): E|w|^2 = d


def test_redraw_schedule():
    m = longseq.mixers.build("performer", 16, num_heads=2, causal=True, redraw_interval=2).train()
    x = torch.randn(1, 8, 16)
    seen = [m.features.clone()]
    for _ in range(5):
        m(x)
        seen.append(m.features.clone())
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert changed == [False, False, True, False, True] and int(m.draws) == 2
    m.eval()
    w = m.features.clone()
    for _ in range(3):
        m(x)
    assert torch.equal(m.features, w)
    never = longseq.mixers.build("performer", 16, causal=True, redraw_interval=None).train()
    w = never.features.clone()
    for _ in range(3):
        never(x)
    assert torch.equal(never.features, w)


def test_state_is_consistent_and_guarded_against_redraws():
    m = longseq.mixers.build("performer", 16, num_heads=2, causal=True, redraw_interval=1, chunk_size=4).double()
    x = torch.randn(1, 20, 16, dtype=torch.float64)
    m.train()
    y_train, s = m(x[:, :10], return_state=True)  # continuing a state never redraws
    y2, s = m(x[:, 10:], state=s, return_state=True)
    m.eval()
    torch.testing.assert_close(torch.cat([y_train, y2], 1), m(x), **TOL)
    m.train()
    m(x)
    m(x)  # a stateless training forward: redraw
    with pytest.raises(ValueError, match="redrawn"):
        m.step(x[:, 0], s)


def test_stabilised_features_no_overflow_x100_and_bf16():
    for causal in (True, False):
        for kernel in ("softmax", "relu"):
            m = longseq.mixers.build("performer", 32, num_heads=2, causal=causal, variant=kernel, chunk_size=16)
            x = (torch.randn(2, 100, 32) * 100).requires_grad_()
            y = m(x)
            y.square().mean().backward()
            assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
            yb = m.to(torch.bfloat16)(torch.randn(2, 50, 32, dtype=torch.bfloat16))
            assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_step_rescales_state_when_a_larger_key_arrives():
    """A late key far larger than all earlier ones: running-max rescaling keeps step == forward."""
    m = longseq.mixers.build("performer", 16, num_heads=1, causal=True, chunk_size=4).double().eval()
    x = torch.randn(1, 12, 16, dtype=torch.float64) * 0.1
    x[:, 9] *= 40
    y = m(x)
    s = m.init_state(1)
    ys = []
    for t in range(12):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)


def test_invalid_options():
    with pytest.raises(ValueError, match="variant"):
        longseq.mixers.build("performer", 16, variant="cosine")
    with pytest.raises(ValueError, match="num_features"):
        longseq.mixers.build("performer", 16, num_features=0)
    with pytest.raises(ValueError, match="redraw_interval"):
        longseq.mixers.build("performer", 16, redraw_interval=-3)


@pytest.mark.parametrize("L,block", [(1, 4), (37, 8), (64, 16), (130, 1024)])
def test_blocked_bidirectional_equals_feature_product(L, block):
    """The fused blocked function (``performer``'s non-causal path) against the plain features and
    the dense kernel matrix, several blocks, a padded sequence; values and q/k/v gradients."""
    torch.manual_seed(L)
    B, H, d, m = 2, 2, 12, 20
    q, k, v = (torch.randn(B, H, L, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    w = draw_random_features(m, d, dtype=torch.float64)
    mask = torch.arange(L)[None] < torch.tensor([L, max(1, L // 3)])[:, None]
    A = plain_features(q, w, "softmax") @ plain_features(k, w, "softmax").transpose(-1, -2)
    A = A * mask[:, None, None, :]
    ref = (A @ v) / A.sum(-1, keepdim=True)
    out = favor_attention_bidirectional(q, k, v, w, mask, block_size=block)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * g).sum(), (q, k, v)), torch.autograd.grad((ref * g).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, **TOL)
