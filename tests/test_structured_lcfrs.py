"""LCFRS-2 rank-space inside against an explicit enumeration of all derivations of the kept rule
set (float64), marginals / MBR against brute force."""

import math

import numpy as np
import pytest
import torch

from longseq import trees as T
from longseq.structured.lcfrs import LCFRS2, chart_layout, mbr_lcfrs

torch.set_num_threads(1)


def derivations(item):
    """Every derivation (nested tuples) of a continuous (i, j) or discontinuous (i, j, k, l) item
    under rules 1-7 (module docstring), written independently of the chart code."""
    if len(item) == 2:
        i, j = item
        if j - i == 1:
            return [("word", i)]
        out = []
        for s in range(i + 1, j):
            out += [("cc", a, b) for a in derivations((i, s)) for b in derivations((s, j))]
        for a in range(i + 1, j):
            for b in range(a + 1, j):
                out += [("fill", x, y) for x in derivations((i, a, b, j)) for y in derivations((a, b))]
        return out
    i, j, k, l = item
    out = [("split", a, b) for a in derivations((i, j)) for b in derivations((k, l))]
    for s in range(i + 1, j):
        out += [("att", 0, x, y) for x in derivations((s, j, k, l)) for y in derivations((i, s))]
        out += [("att", 1, x, y) for x in derivations((i, s, k, l)) for y in derivations((s, j))]
    for s in range(k + 1, l):
        out += [("att", 2, x, y) for x in derivations((i, j, s, l)) for y in derivations((k, s))]
        out += [("att", 3, x, y) for x in derivations((i, j, k, s)) for y in derivations((s, l))]
    return out


def value(t, R, words, m):
    """Sum over the labelings of one derivation: vector over its top symbol (S_c for continuous,
    d for discontinuous items)."""
    kind = t[0]
    if kind == "word":
        return torch.cat([torch.zeros(m, dtype=R["cc"].dtype), R["emission"][:, words[t[1]]]])
    if kind == "cc":
        v = torch.einsum("abc,b,c->a", R["cc"], value(t[1], R, words, m), value(t[2], R, words, m))
    elif kind == "fill":
        v = torch.einsum("adc,d,c->a", R["fill"], value(t[1], R, words, m), value(t[2], R, words, m))
    elif kind == "split":
        return torch.einsum("dbc,b,c->d", R["split"], value(t[1], R, words, m), value(t[2], R, words, m))
    else:
        return torch.einsum("ebc,b,c->e", R["att"][:, t[1]], value(t[2], R, words, m), value(t[3], R, words, m))
    return torch.cat([v, torch.zeros(R["emission"].shape[0], dtype=v.dtype)])


def _width(t):
    kind = t[0]
    if kind == "word":
        return 1
    if kind in ("cc", "fill", "split"):
        return _width(t[1]) + _width(t[2])
    return _width(t[2]) + _width(t[3])


def enumerate_lcfrs(model, words):
    R = {k: v for k, v in model.rules().items()}
    m = model.m
    n = len(words)
    probs = []
    for t in derivations((0, n)):
        probs.append((t, float((R["root"] * value(t, R, words, m)[:m]).sum().detach())))
    return probs


def spans_of_derivation(t, item):
    """All constituents of a derivation (continuous and discontinuous)."""
    blocks = ((item[0], item[1]),) if len(item) == 2 else ((item[0], item[1]), (item[2], item[3]))
    out = {T.normalize(blocks)}
    kind = t[0]
    if kind == "word":
        return out
    if kind == "cc":
        s = item[0] + _width(t[1])
        return out | spans_of_derivation(t[1], (item[0], s)) | spans_of_derivation(t[2], (s, item[1]))
    if kind == "fill":
        i, l = item
        # the D child's yield: its blocks are [i, a) and [b, l) with [a, b) the filler
        a = i + _first_block(t[1])
        b = a + _width(t[2])
        return out | spans_of_derivation(t[1], (i, a, b, l)) | spans_of_derivation(t[2], (a, b))
    i, j, k, l = item
    if kind == "split":
        return out | spans_of_derivation(t[1], (i, j)) | spans_of_derivation(t[2], (k, l))
    q, child, cont = t[1], t[2], t[3]
    w = _width(cont)
    sub = {
        0: ((i + w, j, k, l), (i, i + w)),
        1: ((i, j - w, k, l), (j - w, j)),
        2: ((i, j, k + w, l), (k, k + w)),
        3: ((i, j, k, l - w), (l - w, l)),
    }[q]
    return out | spans_of_derivation(child, sub[0]) | spans_of_derivation(cont, sub[1])


def _first_block(t):
    """Width of the first block of a discontinuous derivation."""
    kind = t[0]
    if kind == "split":
        return _width(t[1])
    q = t[1]
    return _first_block(t[2]) + (_width(t[3]) if q in (0, 1) else 0)


def _model(seed=0, m=2, d=2, p=3, V=7, rank=4):
    torch.manual_seed(seed)
    model = LCFRS2(m, d, p, V, rank=rank, emb_dim=12).double()
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(1.5)
    return model


def test_rules_are_normalised():
    R = _model().rules()
    m = R["cc"].shape[0]
    tot_c = R["cc"].sum((1, 2)) + R["fill"].sum((1, 2))
    tot_d = R["split"].sum((1, 2)) + R["att"].sum((1, 2, 3))
    assert torch.allclose(tot_c, torch.ones(m, dtype=tot_c.dtype)) and torch.allclose(tot_d, torch.ones_like(tot_d))


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_inside_equals_enumeration_of_derivations(n):
    model = _model(seed=n)
    ids = torch.randint(0, 7, (2, n), generator=torch.Generator().manual_seed(n))
    lengths = torch.tensor([n, max(2, n - 1)])
    ll = model.log_likelihood(ids, lengths)
    for b in range(2):
        words = ids[b, : lengths[b]].tolist()
        ref = math.log(sum(p for _, p in enumerate_lcfrs(model, words)))
        assert abs(float(ll[b].detach()) - ref) < 1e-10


def test_gradients_equal_enumeration():
    model = _model(seed=11)
    words = [1, 5, 2, 6, 0]
    ll = model.log_likelihood(torch.tensor([words]), torch.tensor([5]))[0]
    params = list(model.parameters())
    g = torch.autograd.grad(ll, params, allow_unused=True)
    R = model.rules()
    ref = (
        torch.stack([(R["root"] * value(t, R, words, model.m)[: model.m]).sum() for t in derivations((0, 5))])
        .sum()
        .log()
    )
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    for a, c in zip(g, g_ref):
        assert (a is None and c is None) or torch.allclose(a, c, atol=1e-9, rtol=1e-6)


def test_marginals_and_mbr_equal_enumeration():
    model = _model(seed=4)
    n = 5
    words = [3, 1, 4, 1, 5]
    gc, gd = model.span_marginals(torch.tensor([words]), torch.tensor([n]))
    items = chart_layout(n)[0]
    probs = enumerate_lcfrs(model, words)
    z = sum(p for _, p in probs)
    ref = {}
    for t, p in probs:
        for c in spans_of_derivation(t, (0, n)):
            ref[c] = ref.get(c, 0.0) + p / z
    for i in range(n):
        for j in range(i + 1, n + 1):
            assert abs(float(gc[0, i, j]) - ref.get(((i, j),), 0.0)) < 1e-9
    for q, (i, j, k, l) in enumerate(items):
        assert abs(float(gd[0, q]) - ref.get(((i, j), (k, l)), 0.0)) < 1e-9
    # MBR: the derivation with the largest sum of its constituents' marginals
    score = lambda t: sum(ref.get(c, 0.0) for c in spans_of_derivation(t, (0, n)))  # noqa: E731
    best = max((t for t, _ in probs), key=score)
    got = model.parse(torch.tensor([words]), torch.tensor([n]))[0]
    assert abs(sum(ref.get(T.normalize(c), 0.0) for c in set(got)) - score(best)) < 1e-9
    assert {T.normalize(c) for c in got} == spans_of_derivation(best, (0, n))


def test_mbr_prefers_marked_discontinuous_constituent():
    n = 5
    items = chart_layout(n)[0]
    mc = np.zeros((n + 1, n + 1))
    md = np.zeros(len(items))
    md[items.index((0, 1, 3, 5))] = 1.0  # {w0, w3, w4}
    mc[1, 3] = 0.5
    tree = mbr_lcfrs(mc, md, n, n)
    assert ((0, 1), (3, 5)) in tree and ((1, 3),) in tree


def test_float32_finite_and_bad_input():
    torch.manual_seed(0)
    model = LCFRS2(4, 4, 6, 50, rank=8, emb_dim=16, max_length=14)
    ids = torch.randint(0, 50, (2, 14))
    ll = model.log_likelihood(ids, torch.tensor([14, 9]))
    assert torch.isfinite(ll).all()
    ll.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.allclose(ll.double(), model.double().log_likelihood(ids, torch.tensor([14, 9])), rtol=1e-4)
    with pytest.raises(ValueError, match="vocabulary"):
        model.log_likelihood(torch.tensor([[1, 50]]), [2])
    with pytest.raises(ValueError, match="max_length"):
        model.log_likelihood(torch.ones(1, 15, dtype=torch.long), [15])
    with pytest.raises(ValueError, match=">= 2"):
        model.log_likelihood(torch.tensor([[1, 2]]), [1])
