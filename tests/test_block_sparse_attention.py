"""``bigbird``, ``hypercube``, ``block_sparse`` and ``ops.block_gather_attention`` against dense
N x N softmax attention under a token mask built here, independently, from each paper's rule.

Compared in float64, values and gradients (input and parameters), rtol=1e-9, atol=1e-10: the
gathered path only changes the summation order.
"""

import pytest
import torch
from einops import rearrange

import longseq
from longseq.mixers.block_sparse import bigbird_random_blocks

TOL = dict(rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- block masks (plain)
def bigbird_block_mask(n, r, random_rows, dense):
    """[n, n] for one head: ITC globals {0, n-1}, window {i-1, i, i+1}, random_rows[i]."""
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        if dense or i in (0, n - 1):
            allowed[i] = True
            continue
        for j in [0, n - 1, i - 1, i, i + 1] + random_rows[i].tolist():
            allowed[i, j] = True
    allowed[:, 0] = allowed[:, n - 1] = True
    return allowed


def official_hypercube_neighbours(n):
    """The official TesseractSparsityConfig rule, rebuilt from its description: labels from the
    list construction (start [0, 1]; append the reversed list, shift left, set the LSB of the
    second half), neighbours = labels differing in one bit, out-of-range neighbours dropped."""
    k = max(0, (n - 1).bit_length())
    labels = [0, 1]
    while len(labels) < 2**k:
        labels = labels + labels[::-1]
        half = len(labels) // 2
        labels = [(x << 1) | (1 if idx >= half else 0) for idx, x in enumerate(labels)]
    out = []
    for p in range(n):
        nb = {p}
        for j in range(k):
            q = labels.index(labels[p] ^ (1 << j))
            if q < n:
                nb.add(q)
        out.append(nb)
    return out


def butterfly_block_mask(n, n_factors, local, glob, causal):
    f = n_factors if n_factors is not None else max(0, (n - 1).bit_length())
    allowed = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            x = i ^ j
            on = x == 0 or any(x == 2**s for s in range(f))
            on = on or abs(i - j) <= local or j < glob or (i < glob and not causal)
            allowed[i, j] = on and (j <= i or not causal)
    return allowed


def token_mask(block_mask, bs, L):
    """[..., n, n] block mask -> [..., L, L] token mask."""
    return block_mask.repeat_interleave(bs, -1).repeat_interleave(bs, -2)[..., :L, :L]


# ----------------------------------------------------------------------------- dense reference
def dense_reference(m, x, allowed, mask=None):
    """``allowed``: bool [B|1, H|1, L, L]."""
    q, k, v = rearrange(m.qkv(x), "b l (three h d) -> three b h l d", three=3, h=m.num_heads)
    if m.rope is not None:
        q, k = m.rope(q), m.rope(k)
    L = x.shape[1]
    if m.causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool).tril()
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    s = ((q @ k.transpose(-1, -2)) * m.head_dim**-0.5).masked_fill(~allowed, float("-inf"))
    y = m.out(rearrange(torch.nan_to_num(s.softmax(-1)) @ v, "b h l d -> b l (h d)"))
    return y if mask is None else y * mask[..., None]


def reference_mask(m, L, lengths):
    """The method's token mask for each sequence, [B, H|1, L, L], built from the rules above."""
    bs = m.block_size
    masks = []
    for length in lengths:
        n = -(-length // bs)
        if m.spec.name == "bigbird":
            r, dense = m.num_random_blocks, length <= (5 + 2 * m.num_random_blocks) * bs
            R = m.random_blocks(n) if not dense else None
            blk = torch.stack([bigbird_block_mask(n, r, None if dense else R[h], dense) for h in range(m.num_heads)])
        elif m.spec.name == "hypercube":
            blk = torch.zeros(n, n, dtype=torch.bool)
            for p, nb in enumerate(official_hypercube_neighbours(n)):
                blk[p, list(nb)] = True
            blk = blk[None]
        else:
            blk = butterfly_block_mask(n, m.n_factors, m.local_blocks, m.global_blocks, m.causal)[None]
        tok = torch.zeros(blk.shape[0], L, L, dtype=torch.bool)
        tok[:, :length, :length] = token_mask(blk, bs, length)
        masks.append(tok)
    return torch.stack(masks)


def check(m, x, mask=None):
    B, L, _ = x.shape
    lengths = [L] * B if mask is None else [int(mk.nonzero().max()) + 1 for mk in mask]
    allowed = reference_mask(m, L, lengths)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = m(xa, mask), dense_reference(m, xb, allowed, mask)
    torch.testing.assert_close(ya, yb, **TOL)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * g).sum(), [xa, *m.parameters()])
    gb = torch.autograd.grad((yb * g).sum(), [xb, *m.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)


CONFIGS = {
    "bigbird": dict(block_size=4, num_random_blocks=2),
    "hypercube": dict(block_size=4),
    "block_sparse": dict(block_size=4),
    "block_sparse_lg": dict(block_size=5, local_blocks=1, global_blocks=2, n_factors=2),
}


def build(cfg, causal=False, head_dim=12, heads=2, rope=True, **kw):
    name = cfg.replace("_lg", "")
    opts = {**CONFIGS[cfg], **kw}
    return (
        longseq.mixers.build(name, heads * head_dim, num_heads=heads, causal=causal, rope=rope, **opts).double().eval()
    )


MODES = [
    ("bigbird", False),
    ("hypercube", False),
    ("block_sparse", False),
    ("block_sparse", True),
    ("block_sparse_lg", False),
    ("block_sparse_lg", True),
]


@pytest.mark.parametrize("cfg,causal", MODES)
@pytest.mark.parametrize("L,head_dim,rope", [(1, 12, True), (63, 12, True), (65, 60, False), (200, 12, True)])
def test_matches_dense_reference(cfg, causal, L, head_dim, rope):
    m = build(cfg, causal, head_dim=head_dim, rope=rope)
    check(m, torch.randn(2, L, m.d_model, dtype=torch.float64))


@pytest.mark.parametrize("cfg,causal", MODES)
def test_long_sequence_small_dim(cfg, causal):
    m = build(cfg, causal, head_dim=4, block_size=16)
    check(m, torch.randn(1, 1000, m.d_model, dtype=torch.float64))


@pytest.mark.parametrize("cfg,causal", MODES)
def test_padding_mask_matches_reference(cfg, causal):
    m = build(cfg, causal)
    x = torch.randn(3, 70, m.d_model, dtype=torch.float64)
    mask = torch.arange(70)[None] < torch.tensor([70, 45, 3])[:, None]
    check(m, x, mask)


def test_bigbird_dense_fallback_and_mixed_batch():
    """Short sequences use full attention; a batch may mix dense and sparse sequences."""
    m = build("bigbird", num_random_blocks=1)  # threshold (5 + 2) * 4 = 28 tokens
    x = torch.randn(2, 40, m.d_model, dtype=torch.float64)
    check(m, x, torch.arange(40)[None] < torch.tensor([40, 28])[:, None])
    full = longseq.mixers.build("softmax_naive", m.d_model, num_heads=2, rope=True).double()
    full.load_state_dict(m.state_dict(), strict=False)
    x = torch.randn(2, 28, m.d_model, dtype=torch.float64)
    torch.testing.assert_close(m(x), full(x), **TOL)


def test_bigbird_random_blocks():
    n, r = 12, 3
    R = bigbird_random_blocks(n, 4, r, torch.Generator().manual_seed(0))
    assert R.shape == (4, n, r) and (R[:, [0, n - 1]] == -1).all()
    for h in range(4):
        for i in range(1, n - 1):
            row = R[h, i].tolist()
            assert len(set(row)) == r and not set(row) & {0, n - 1, i - 1, i, i + 1}
            assert all(1 <= j <= n - 2 for j in row)
    # uniform over the candidates: each of the n - 5 candidates of a middle row is hit ~r/(n-5)
    R = bigbird_random_blocks(n, 20000, r, torch.Generator().manual_seed(1))[:, 5]
    freq = torch.bincount(R.flatten(), minlength=n).double() / R.shape[0]
    cand = [j for j in range(1, n - 1) if j not in (4, 5, 6)]
    torch.testing.assert_close(
        freq[cand], torch.full((len(cand),), r / len(cand), dtype=torch.float64), atol=0.02, rtol=0
    )


def test_bigbird_random_pattern_per_layer_head_fixed_at_eval():
    torch.manual_seed(0)
    a, b = build("bigbird"), build("bigbird")
    Ra, Rb = a.random_blocks(20), b.random_blocks(20)
    assert not torch.equal(Ra, Rb), "layers must differ"
    assert not torch.equal(Ra[0], Ra[1]), "heads must differ"
    assert torch.equal(Ra, a.random_blocks(20)), "fixed pattern"
    c = build("bigbird")
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.random_blocks(20), Ra), "the pattern travels with the state dict"
    a.resample = True
    x = torch.randn(1, 80, a.d_model, dtype=torch.float64)
    torch.testing.assert_close(a(x), a(x), **TOL)  # eval: fixed even with resample
    a.train()
    assert not torch.equal(a.random_blocks(20), a.random_blocks(20))


def test_hypercube_layout_matches_paper_example():
    from longseq.mixers.block_sparse import hypercube_key_blocks

    expected = {0: {0, 1, 3, 7}, 1: {0, 1, 2, 6}, 2: {1, 2, 3, 5}, 3: {0, 2, 3, 4}, 4: {3, 4, 5, 7}}
    tbl = hypercube_key_blocks(8)
    for p, nb in expected.items():
        assert set(tbl[p].tolist()) == nb
    for n in (1, 2, 5, 8, 13, 33):
        got = [set(row.tolist()) for row in hypercube_key_blocks(n)]
        assert got == official_hypercube_neighbours(n)


@pytest.mark.parametrize("cfg,causal", MODES)
def test_large_inputs_finite_and_bf16(cfg, causal):
    m = build(cfg, causal).float().train()
    x = (100 * torch.randn(2, 67, m.d_model)).requires_grad_()
    mask = torch.arange(67)[None] < torch.tensor([67, 20])[:, None]
    y = m(x, mask)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    yb = m.to(torch.bfloat16)(x.detach().to(torch.bfloat16), mask)
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_invalid_options():
    with pytest.raises(ValueError, match="block_size"):
        longseq.mixers.build("bigbird", 16, block_size=0)
    with pytest.raises(ValueError, match="num_random_blocks"):
        longseq.mixers.build("bigbird", 16, num_random_blocks=-1)
    with pytest.raises(ValueError, match="n_factors"):
        longseq.mixers.build("block_sparse", 16, n_factors=0)
    with pytest.raises(ValueError, match="local_blocks"):
        longseq.mixers.build("block_sparse", 16, local_blocks=1.5)
    with pytest.raises(ValueError, match="causal"):
        longseq.mixers.build("hypercube", 16, causal=True)
