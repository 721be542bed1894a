"""``kgv`` (Anthe's KgV, SDPA path) against the dense formula written here, in float64.

Tolerance: rtol=atol=1e-10 (the same algorithm, summed in a different order).
"""

import pytest
import torch

import longseq
from longseq.nn import RotaryEmbedding

TOL = dict(rtol=1e-10, atol=1e-10)


def dense_kgv(m, x, mask, causal, rope):
    """softmax(x_h (W_k x)_h^T / sqrt(Dh) + mask) (W_v (x * sigmoid(W_q x)))_h, then W_o; N x N scores."""
    B, L, d = x.shape
    H, Dh = m.num_heads, d // m.num_heads
    heads = lambda t: t.reshape(B, L, H, Dh).transpose(1, 2)  # noqa: E731
    q = heads(x)
    k = heads(x @ m.key.weight.T)
    v = heads((x * torch.sigmoid(x @ m.gate.weight.T)) @ m.value.weight.T)
    if rope:
        r = RotaryEmbedding(Dh).to(x.dtype)
        q, k = r(q), r(k)
    s = q @ k.transpose(-1, -2) / Dh**0.5  # [B, H, L, L]
    allowed = torch.ones(L, L, dtype=torch.bool)
    if causal:
        allowed = torch.tril(allowed)
    allowed = allowed.expand(B, 1, L, L)
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    allowed = allowed | torch.eye(L, dtype=torch.bool)  # padded queries: see themselves
    o = s.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    y = o.transpose(1, 2).reshape(B, L, d) @ m.out.weight.T
    return y if mask is None else y * mask[..., None]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize(
    "L,d,h,masked", [(1, 24, 2, False), (63, 24, 2, True), (65, 120, 2, False), (200, 24, 3, True)]
)
def test_matches_dense_formula_values_and_grads(causal, rope, L, d, h, masked):
    torch.manual_seed(L + d)
    m = longseq.mixers.build("kgv", d, num_heads=h, causal=causal, rope=rope).double()
    x = torch.randn(2, L, d, dtype=torch.float64)
    mask = (torch.arange(L)[None] < torch.tensor([L, max(1, L // 2)])[:, None]) if masked else None
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = m(xa, mask)
    params = list(m.parameters())
    ga = torch.autograd.grad((ya * ya.detach().sin()).sum(), [xa] + params)
    yb = dense_kgv(m, xb, mask, causal, rope)
    gb = torch.autograd.grad((yb * yb.detach().sin()).sum(), [xb] + params)
    torch.testing.assert_close(ya, yb, **TOL)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)


def test_gate_uses_query_weight_and_queries_are_unprojected():
    """Zeroing W_q gives a constant gate of 1/2; queries do not depend on any weight."""
    m = longseq.mixers.build("kgv", 8, num_heads=1).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    q, _, v = m.qkv(x)
    torch.testing.assert_close(q[0, 0], x[0])
    with torch.no_grad():
        m.gate.weight.zero_()
    _, _, v = m.qkv(x)
    torch.testing.assert_close(v[0, 0], m.value(x * 0.5)[0])


def test_large_inputs_finite_and_bf16_forward():
    m = longseq.mixers.build("kgv", 32, num_heads=2, causal=True, rope=True)
    y = m(100 * torch.randn(2, 70, 32))
    assert torch.isfinite(y).all()
    yb = m.to(torch.bfloat16)(torch.randn(2, 70, 32, dtype=torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_cache_holds_gated_values():
    m = longseq.mixers.build("kgv", 16, num_heads=2, causal=True).double()
    x = torch.randn(1, 7, 16, dtype=torch.float64)
    _, s = m(x, return_state=True)
    _, _, v = m.qkv(x)
    torch.testing.assert_close(s["v"][:, :, :7], v)
    assert m.state_size(7) == 2 * 16 * 7
