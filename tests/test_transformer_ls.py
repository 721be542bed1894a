"""``transformer_ls`` against a dense reference written here, float64.

The reference builds ONE softmax over the scores ``[Q K_bar^T ; Q K^T] / sqrt(Dh)`` where the
window is an N x N mask (segment-wise: ``[s w - w/2, (s+1) w + w/2)``; causal: the last w tokens)
and, causally, the compressed keys of chunk c are masked for queries in chunks <= c.
Tolerance rtol=atol=1e-10. LayerNorm affine parameters are re-drawn so that they matter.
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.mixers import transformer_ls
from longseq.nn import RotaryEmbedding

TOL = dict(rtol=1e-10, atol=1e-10)


def make(d, h, causal, seed=0, **kw):
    torch.manual_seed(seed)
    m = longseq.mixers.build("transformer_ls", d, num_heads=h, causal=causal, **kw).double()
    with torch.no_grad():
        for ln in (m.ln_long, m.ln_short):
            ln.weight.normal_(1, 0.3)
            ln.bias.normal_(0, 0.3)
    return m


def dense_ls(m, x, mask, causal):
    B, L, d = x.shape
    H, Dh, r, w, l = m.num_heads, d // m.num_heads, m.rank, m.window, m.chunk
    heads = lambda t: t.reshape(*t.shape[:-1], H, -1).transpose(-3, -2)  # [B, L, H*e] -> [B, H, L, e]  # noqa: E731
    q, k, v = (x @ m.qkv.weight.T).split(d, -1)
    ln = lambda t, mod: F.layer_norm(t, (d,), mod.weight, mod.bias, mod.eps)  # noqa: E731
    kw, vw = heads(ln(k, m.ln_short)), heads(ln(v, m.ln_short))
    q, k, v = heads(q), heads(k), heads(v)
    qw = q
    if m.rope is not None:
        rope = RotaryEmbedding(Dh).to(x.dtype)
        qw, kw = rope(q), rope(kw)
    logits = heads(x @ m.proj.weight.T)  # [B, H, L, r]
    valid = torch.ones(B, L, dtype=torch.bool) if mask is None else mask
    i = torch.arange(L)

    def compress(idx):  # dynamic projection over the positions idx -> [B, H, r, Dh] each
        ok = valid[:, None, idx, None]
        p = logits[:, :, idx].masked_fill(~ok, float("-inf")).softmax(dim=2)
        p = torch.nan_to_num(p)  # a chunk with no real token
        kb, vb = p.transpose(-1, -2) @ (k[:, :, idx] * ok), p.transpose(-1, -2) @ (v[:, :, idx] * ok)
        merge = lambda t: t.transpose(1, 2).reshape(B, r, d)  # noqa: E731
        return heads(ln(merge(kb), m.ln_long)), heads(ln(merge(vb), m.ln_long))

    if not causal:
        kb, vb = compress(i)
        long_ok = torch.ones(B, L, r, dtype=torch.bool)
        seg = i // w
        win_ok = (i[None, :] >= (seg * w - w // 2)[:, None]) & (i[None, :] < ((seg + 1) * w + w // 2)[:, None])
    else:
        G = L // l
        parts = [compress(torch.arange(c * l, (c + 1) * l)) for c in range(G)]
        kb = torch.cat([p[0] for p in parts] + [k.new_zeros(B, H, 0, Dh)], 2)  # [B, H, G r, Dh]
        vb = torch.cat([p[1] for p in parts] + [v.new_zeros(B, H, 0, Dh)], 2)
        chunk_of_key = torch.arange(G * r) // r
        real_chunk = valid[:, : G * l].reshape(B, G, l).any(-1)  # [B, G]
        long_ok = (chunk_of_key[None, :] < (i // l)[:, None])[None] & real_chunk.repeat_interleave(r, -1)[:, None, :]
        win_ok = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < w)
    win_ok = (win_ok[None] & valid[:, None, :]) | torch.eye(L, dtype=torch.bool)  # padded queries see themselves
    scores = torch.cat([q @ kb.transpose(-1, -2), qw @ kw.transpose(-1, -2)], -1) / Dh**0.5  # [B, H, L, M + L]
    ok = torch.cat([long_ok, win_ok], -1)[:, None]
    a = scores.masked_fill(~ok, float("-inf")).softmax(-1)
    o = a[..., : kb.shape[2]] @ vb + a[..., kb.shape[2] :] @ vw
    y = o.transpose(1, 2).reshape(B, L, d) @ m.out.weight.T
    return y if mask is None else y * mask[..., None]


CASES = [(1, 24, 2, False), (63, 24, 2, True), (65, 120, 2, False), (203, 24, 3, True)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("L,d,h,masked", CASES)
@pytest.mark.parametrize("query_block", [1024, 24])
def test_matches_dense_single_softmax_values_and_grads(causal, L, d, h, masked, query_block, monkeypatch):
    monkeypatch.setattr(transformer_ls, "QUERY_BLOCK", query_block)
    m = make(d, h, causal, seed=L, window=12, rank=3, chunk_size=5, rope=L % 2 == 1)
    x = torch.randn(2, L, d, dtype=torch.float64)
    mask = (torch.arange(L)[None] < torch.tensor([L, max(1, L // 2 + 1)])[:, None]) if masked else None
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    named = list(m.named_parameters())
    ya = m(xa, mask)
    ga = torch.autograd.grad((ya * ya.detach().sin()).sum(), [xa] + [p for _, p in named], allow_unused=True)
    yb = dense_ls(m, xb, mask, causal)
    gb = torch.autograd.grad((yb * yb.detach().sin()).sum(), [xb] + [p for _, p in named], allow_unused=True)
    torch.testing.assert_close(ya, yb, **TOL)
    for (name, p), a, b in zip([("x", xa)] + named, ga, gb):  # unused (None): no complete chunk yet
        zero = torch.zeros_like(p)
        torch.testing.assert_close(zero if a is None else a, zero if b is None else b, **TOL, msg=name)


def test_length_1000_bidirectional_and_causal_values():
    for causal in (False, True):
        m = make(16, 2, causal, window=64, rank=4, chunk_size=32)
        x = torch.randn(1, 1000, 16, dtype=torch.float64)
        torch.testing.assert_close(m(x), dense_ls(m, x, None, causal), **TOL)


@pytest.mark.parametrize("rope", [False, True])
def test_step_and_chunked_prefill_equal_forward(rope):
    m = make(16, 2, True, window=6, rank=2, chunk_size=4, rope=rope)
    x = torch.randn(1, 30, 16, dtype=torch.float64)
    y = m(x)
    s, ys = m.init_state(1), []
    for t in range(30):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    for cuts in [(3, 9, 21)]:
        s, parts, prev = None, [], 0
        for c in list(cuts) + [30]:
            y_p, s = m(x[:, prev:c], state=s, return_state=True)
            parts.append(y_p)
            prev = c
        torch.testing.assert_close(torch.cat(parts, 1), y, **TOL)
    assert s["mem_k"].shape[2] == (30 // 4) * 2 and s["win_k"].shape[2] == 5 and s["cur_k"].shape[2] == 30 % 4
    assert m.state_size(30) == 2 * 5 * 16 + 2 * (2 * 16 + 2 * 2) + 2 * 7 * 2 * 16


def test_masked_chunk_is_never_attended():
    """A chunk of padded tokens in the middle contributes nothing to later real queries."""
    m = make(16, 2, True, window=4, rank=2, chunk_size=4)
    x = torch.randn(1, 16, 16, dtype=torch.float64)
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[:, 4:8] = False
    x2 = x.clone()
    x2[:, 4:8] = 30 * torch.randn(1, 4, 16, dtype=torch.float64)
    torch.testing.assert_close(m(x, mask), m(x2, mask), **TOL)
    torch.testing.assert_close(m(x, mask), dense_ls(m, x, mask, True), **TOL)


def test_large_inputs_finite_bf16_forward_and_option_errors():
    for causal in (False, True):
        m = longseq.mixers.build("transformer_ls", 32, num_heads=2, causal=causal, window=16, rank=4, chunk_size=8)
        y = m(100 * torch.randn(2, 70, 32))
        assert torch.isfinite(y).all()
        yb = m.to(torch.bfloat16)(torch.randn(2, 70, 32, dtype=torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()
    with pytest.raises(ValueError, match="window"):
        longseq.mixers.build("transformer_ls", 16, window=7)
    with pytest.raises(ValueError, match="rank"):
        longseq.mixers.build("transformer_ls", 16, rank=0)
    with pytest.raises(ValueError, match="rank"):
        longseq.mixers.build("transformer_ls", 16, causal=True, rank=5, chunk_size=4)
    with pytest.raises(ValueError, match="chunk_size"):
        longseq.mixers.build("transformer_ls", 16, chunk_size=0)


@pytest.mark.parametrize("query_block", [1024, 16])
def test_prefill_in_pieces_over_several_query_blocks_values_and_grads(query_block, monkeypatch):
    """Continuing a state with inputs longer than the causal kernel's query super-block: cached
    window keys, a partly filled chunk and a memory of compressed keys, several blocks each."""
    monkeypatch.setattr(transformer_ls, "QUERY_BLOCK", query_block)
    m = make(16, 2, True, window=6, rank=2, chunk_size=4, rope=True)
    x = torch.randn(1, 230, 16, dtype=torch.float64, requires_grad=True)
    y = m(x)
    s, parts, prev = None, [], 0
    for c in (70, 161, 230):
        y_p, s = m(x[:, prev:c], state=s, return_state=True)
        parts.append(y_p)
        prev = c
    y_parts = torch.cat(parts, 1)
    torch.testing.assert_close(y_parts, y, **TOL)
    torch.testing.assert_close(y, dense_ls(m, x, None, True), **TOL)
    g = torch.randn_like(y)
    for a, b in zip(
        torch.autograd.grad((y * g).sum(), [x, *m.parameters()]),
        torch.autograd.grad((y_parts * g).sum(), [x, *m.parameters()]),
    ):
        torch.testing.assert_close(a, b, **TOL)
