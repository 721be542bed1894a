"""``softmax`` (SDPA) against the materialised reference ``softmax_naive`` and a formula written here."""

import pytest
import torch

import longseq

TOL = dict(rtol=1e-10, atol=1e-10)


def pair(causal, rope, d=48, h=4):
    a = longseq.mixers.build("softmax", d, num_heads=h, causal=causal, rope=rope).double()
    b = longseq.mixers.build("softmax_naive", d, num_heads=h, causal=causal, rope=rope).double()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_naive_values_and_grads(causal, rope, masked):
    a, b = pair(causal, rope)
    x = torch.randn(3, 65, 48, dtype=torch.float64)
    mask = (torch.arange(65)[None] < torch.tensor([65, 40, 1])[:, None]) if masked else None
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa, mask), b(xb, mask)
    torch.testing.assert_close(ya, yb, **TOL)
    g = torch.randn_like(ya)
    (ya * g).sum().backward()
    (yb * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, **TOL, msg=n)


def test_matches_textbook_formula():
    """Single head, no rope: y = W_o softmax(q k^T / sqrt(d)) v with an explicit loop over queries."""
    m = longseq.mixers.build("softmax", 8, num_heads=1, causal=True).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    q, k, v = m.qkv(x)[0].split(8, dim=-1)
    rows = []
    for i in range(6):
        w = torch.softmax(q[i] @ k[: i + 1].T / 8**0.5, dim=0)
        rows.append(w @ v[: i + 1])
    ref = m.out(torch.stack(rows))
    torch.testing.assert_close(m(x)[0], ref, **TOL)


def test_rope_makes_scores_relative():
    """With RoPE, shifting every position by the same offset leaves scores unchanged."""
    from longseq.nn import RotaryEmbedding

    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 5, 16, dtype=torch.float64), torch.randn(1, 1, 5, 16, dtype=torch.float64)
    s0 = rope(q) @ rope(k).transpose(-1, -2)
    s7 = rope(q, 7) @ rope(k, 7).transpose(-1, -2)
    torch.testing.assert_close(s0, s7, **TOL)


def test_kv_cache_grows_and_state_size():
    m = longseq.mixers.build("softmax", 16, num_heads=2, causal=True)
    s = m.init_state(1)
    for _ in range(200):
        _, s = m.step(torch.randn(1, 16), s)
    assert s["len"] == 200 and s["k"].shape[2] >= 200
    assert m.state_size(200) == 2 * 16 * 200
