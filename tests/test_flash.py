"""``flash`` (GAU + mixed chunk attention) against a dense N x N reference written here, float64.

The reference materialises both parts of eq. 6-8 as N x N matrices: the relu^2 quadratic part
under a block-diagonal (same chunk) mask, and the linear part Q^lin K^lin^T / C under the
"earlier chunk" (causal) or all-keys (bidirectional) mask. Tolerance rtol=atol=1e-10.
Parameters are re-drawn at O(1) scale (the paper's gamma ~ N(0, 0.02^2) makes scores tiny and
the comparison weak).
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.nn import RotaryEmbedding

TOL = dict(rtol=1e-10, atol=1e-10)


def make(d=24, causal=False, seed=0, **kw):
    torch.manual_seed(seed)
    m = longseq.mixers.build("flash", d, causal=causal, **kw).double()
    with torch.no_grad():
        m.gamma.normal_(0, 0.5)
        m.beta.normal_(0, 0.5)
        if m.rel_pos is not None:
            m.rel_pos.normal_(0, 0.5)
    return m


def dense_flash(m, x, mask, causal):
    B, L, _ = x.shape
    C, e, s = m.chunk, m.e, m.s
    u, v, z = F.silu(x @ m.hidden.weight.T + m.hidden.bias).split([e, e, s], -1)
    qk = z[:, :, None, :] * m.gamma + m.beta  # [B, L, 4, s]
    if m.rope is not None:
        qk = RotaryEmbedding(s).to(x.dtype)(qk.transpose(1, 2)).transpose(1, 2)
    qq, kq, ql, kl = qk.unbind(2)  # [B, L, s]
    i = torch.arange(L)
    same_chunk = (i[:, None] // C) == (i[None, :] // C)  # [L, L]
    keys = torch.ones(B, L, L, dtype=torch.bool) if mask is None else mask[:, None, :].expand(B, L, L)
    quad_mask = same_chunk & keys
    lin_mask = keys.clone()
    if causal:
        quad_mask = quad_mask & (i[None, :] <= i[:, None])
        lin_mask = lin_mask & ((i[None, :] // C) < (i[:, None] // C))
    bias = 0.0
    if m.rel_pos is not None:
        rel = (i[None, :] - i[:, None]).clamp(-(C - 1), C - 1) + C - 1
        bias = m.rel_pos[rel]  # only used inside chunks
    quad = F.relu(qq @ kq.transpose(1, 2) / C + bias).square() * quad_mask
    lin = (ql @ kl.transpose(1, 2) / C) * lin_mask
    y = ((quad + lin) @ v * u) @ m.out.weight.T + m.out.bias
    return y if mask is None else y * mask[..., None]


CASES = [(1, 8, 24, False), (63, 16, 24, True), (65, 16, 60, False), (200, 32, 24, True)]
CASES = [(c, *case) for c in (False, True) for case in CASES] + [(True, 1000, 64, 16, True)]


@pytest.mark.parametrize("causal,L,C,d,masked", CASES)
def test_matches_dense_values_and_grads(causal, L, C, d, masked):
    opts = dict(rope=L % 2 == 1, rel_pos_bias=L != 200)  # both on and off across the cases
    m = make(d, causal, seed=L, chunk_size=C, qk_dim=12, **opts)
    x = torch.randn(2, L, d, dtype=torch.float64)
    mask = (torch.arange(L)[None] < torch.tensor([L, max(1, L // 2 + 3)])[:, None]) if masked else None
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    params = list(m.parameters())
    ya = m(xa, mask)
    ga = torch.autograd.grad((ya * ya.detach().sin()).sum(), [xa] + params)
    yb = dense_flash(m, xb, mask, causal)
    gb = torch.autograd.grad((yb * yb.detach().sin()).sum(), [xb] + params)
    torch.testing.assert_close(ya, yb, **TOL)
    for (name, _), a, b in zip([("x", None)] + list(m.named_parameters()), ga, gb):
        torch.testing.assert_close(a, b, **TOL, msg=name)


@pytest.mark.parametrize("rope", [False, True])
def test_step_and_chunked_prefill_equal_forward(rope):
    m = make(16, True, chunk_size=8, qk_dim=6, rope=rope)
    x = torch.randn(2, 37, 16, dtype=torch.float64)
    y = m(x)
    s, ys = m.init_state(2), []
    for t in range(37):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    for cuts in [(3, 8, 20), (1, 16, 36)]:
        s, parts, prev = None, [], 0
        for c in list(cuts) + [37]:
            y_p, s = m(x[:, prev:c], state=s, return_state=True)
            parts.append(y_p)
            prev = c
        torch.testing.assert_close(torch.cat(parts, 1), y, **TOL)
        assert s["v"].shape[1] == 37 % 8 and s["pos"] == 37
    assert m.state_size(37) == 6 * m.e + 5 * (4 * 6 + m.e)


def test_padded_keys_do_not_enter_the_linear_state():
    m = make(16, False, chunk_size=4, qk_dim=6)
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    mask = torch.arange(10)[None] < 7
    x2 = x.clone()
    x2[:, 7:] = 50 * torch.randn(1, 3, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x, mask), m(x2, mask), **TOL)
    torch.testing.assert_close(m(x, mask)[:, :7], m(x[:, :7]), **TOL)


def test_the_single_head_gau_refuses_num_heads():
    with pytest.raises(ValueError, match="no attention heads"):
        longseq.mixers.build("flash", 16, num_heads=4, chunk_size=8)
    with pytest.raises(ValueError, match="'expansion' is now 'expand'"):
        longseq.mixers.build("flash", 16, expansion=2.0)
    spec = longseq.mixers.spec("flash")
    assert spec.has_ffn and not spec.heads


def test_large_inputs_finite_bf16_forward_and_option_errors():
    m = longseq.mixers.build("flash", 32, causal=True, chunk_size=16)
    y = m(100 * torch.randn(2, 70, 32))
    assert torch.isfinite(y).all()
    yb = m.to(torch.bfloat16)(torch.randn(2, 70, 32, dtype=torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()
    with pytest.raises(ValueError, match="chunk_size"):
        longseq.mixers.build("flash", 16, chunk_size=0)
    with pytest.raises(ValueError, match="qk_dim"):
        longseq.mixers.build("flash", 16, qk_dim=7)
