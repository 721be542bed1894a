"""StructFormer: the dependency distribution against the formulas written as loops, the
constrained attention against a dense per-head reference, parsing output."""

import math

import pytest
import torch

import longseq
from longseq.mixers.structformer import dependency_distribution


def _direct(distance, height, s0, s1):
    """p_D(j | i) = Σ_{l ≤ i ≤ r} p(l|i) p(r|i) softmax_{[l, r]}(s1 τ)_j, every term by a loop."""
    L = height.shape[0]
    g = lambda i, k: torch.sigmoid((height[i] - distance[k]) * s0)  # noqa: E731

    def Fl(i, l):
        if l < 0:
            return torch.tensor(0.0, dtype=torch.float64)
        vals = [g(i, k) for k in range(l, i)]
        return min(vals) if vals else torch.tensor(1.0, dtype=torch.float64)

    def Gr(i, r):
        if r >= L:
            return torch.tensor(0.0, dtype=torch.float64)
        vals = [g(i, k) for k in range(i, r)]
        return min(vals) if vals else torch.tensor(1.0, dtype=torch.float64)

    P = torch.zeros(L, L, dtype=torch.float64)
    for i in range(L):
        for l in range(i + 1):
            pl = Fl(i, l) - Fl(i, l - 1)
            for r in range(i, L):
                pr = Gr(i, r) - Gr(i, r + 1)
                w = torch.exp(height[l : r + 1] * s1)
                w = w / w.sum()
                for j in range(l, r + 1):
                    if j != i:
                        P[i, j] += pl * pr * w[j - l]
    return P


def test_dependency_distribution_equals_formula():
    g = torch.Generator().manual_seed(0)
    L = 6
    d = torch.randn(1, L, generator=g, dtype=torch.float64)
    d[0, -1] = 1e9  # no boundary after the last token
    h = torch.randn(1, L, generator=g, dtype=torch.float64)
    got, block = dependency_distribution(d, h, 1.7, 0.8)
    torch.testing.assert_close(got[0], _direct(d[0], h[0], 1.7, 0.8), rtol=1e-12, atol=1e-12)
    # p(l, r | i) is a distribution over the spans around i
    torch.testing.assert_close(block.sum((-1, -2)), torch.ones(1, L, dtype=torch.float64))


def _mixer(**kw):
    torch.manual_seed(0)
    return longseq.mixers.build("structformer", 16, num_heads=2, conv_size=3, parser_layers=2, **kw).double().eval()


def test_attention_equals_dense_masked_reference():
    m = _mixer()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    y = m(x, mask)
    parent = m.dependency(x * mask[..., None], mask)
    w = torch.softmax(m.rel_weight, -1)
    q, k, v = m.qkv(x * mask[..., None]).chunk(3, dim=-1)
    ref = torch.zeros(2, 7, 16, dtype=torch.float64)
    for b in range(2):
        for h in range(2):
            sl = slice(8 * h, 8 * h + 8)
            for i in range(7):
                acc = torch.zeros(8, dtype=torch.float64)
                for j in range(7):
                    if not mask[b, j]:
                        continue
                    dep = w[h, 0] * parent[b, i, j] + w[h, 1] * parent[b, j, i]
                    acc = acc + torch.sigmoid(q[b, i, sl] @ k[b, j, sl] / math.sqrt(8)) * dep * v[b, j, sl]
                ref[b, i, sl] = acc
    ref = m.out(ref) * mask[..., None]
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


def test_parse_returns_tree_and_heads():
    m = _mixer()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    spans, heads = m.parse(x, mask)
    assert spans[0][0] == ((0, 6),) and spans[1][0] == ((0, 4),)
    assert len(spans[0]) == 2 * 6 - 1 and len(heads[1]) == 4
    assert sum(h == -1 for h in heads[0]) == 1 and all(h != i for i, h in enumerate(heads[0]))


def test_gradients_finite_and_errors():
    m = _mixer()
    m.train()
    x = torch.randn(2, 9, 16, dtype=torch.float64, requires_grad=True)
    m(x).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.scaler.grad).all()
    with pytest.raises(ValueError, match="no causal mode"):
        longseq.mixers.build("structformer", 16, causal=True)
