"""PCFG inside algorithms against an independent enumeration of all binary trees (float64)."""

import itertools
import math

import numpy as np
import pytest
import torch

from longseq.structured.pcfg import PCFG, inside_full, inside_rank, mbr_tree

torch.set_num_threads(1)


def all_trees(i, j):
    """Every binary bracketing of [i, j) as nested tuples (leaves are word positions)."""
    if j - i == 1:
        return [i]
    out = []
    for k in range(i + 1, j):
        for left in all_trees(i, k):
            for right in all_trees(k, j):
                out.append((left, right))
    return out


def tree_spans(t):
    if isinstance(t, int):
        return {(t, t + 1)}, t, t + 1
    ls, i, _ = tree_spans(t[0])
    rs, _, j = tree_spans(t[1])
    return ls | rs | {(i, j)}, i, j


def tree_value(t, T, E, NT):
    """Sum over all labelings of one tree: vector over the parent symbol (NT part / PT part)."""
    if isinstance(t, int):
        return torch.cat([torch.zeros(NT, dtype=E.dtype), E[:, t]])
    left, right = tree_value(t[0], T, E, NT), tree_value(t[1], T, E, NT)
    v = torch.einsum("abc,b,c->a", T, left, right)
    return torch.cat([v, torch.zeros(E.shape[0], dtype=E.dtype)])


def enumerate_inside(log_root, log_binary, log_emission, words):
    """log p(x) and {tree: prob} by enumerating all binary trees, labelings summed per tree."""
    NT = log_root.shape[0]
    T, E = log_binary.exp(), log_emission.exp()[:, words]
    probs = {}
    for t in all_trees(0, len(words)):
        probs[t] = float((log_root.exp() * tree_value(t, T, E, NT)[:NT]).sum().detach())
    return math.log(sum(probs.values())), probs


def random_grammar(NT, PT, V, seed):
    g = torch.Generator().manual_seed(seed)
    S = NT + PT
    log_root = torch.randn(NT, generator=g, dtype=torch.float64).log_softmax(-1)
    log_binary = torch.randn(NT, S * S, generator=g, dtype=torch.float64).mul(2).log_softmax(-1).view(NT, S, S)
    log_emission = torch.randn(PT, V, generator=g, dtype=torch.float64).mul(2).log_softmax(-1)
    return log_root, log_binary, log_emission


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_inside_full_equals_tree_enumeration(n):
    NT, PT, V = 3, 4, 7
    lr, lb, le = random_grammar(NT, PT, V, seed=n)
    g = torch.Generator().manual_seed(100 + n)
    ids = torch.randint(0, V, (3, n), generator=g)
    lengths = torch.tensor([n, max(2, n - 1), 2])
    got = inside_full(lr, lb, le, ids, lengths)
    for b in range(3):
        ref, _ = enumerate_inside(lr, lb, le, ids[b, : lengths[b]].tolist())
        assert abs(float(got[b]) - ref) < 1e-10


def test_inside_full_equals_explicit_labeling_enumeration():
    """Tiny grammar, n = 4: sum over every tree and every labeling of its nodes, explicitly."""
    NT, PT, V, n = 2, 2, 3, 4
    lr, lb, le = random_grammar(NT, PT, V, seed=7)
    words = [0, 2, 1, 2]
    total = 0.0
    for t in all_trees(0, n):
        internal = []

        def collect(t):
            if isinstance(t, int):
                return
            internal.append(t)
            collect(t[0]), collect(t[1])

        collect(t)
        for labels in itertools.product(range(NT), repeat=len(internal)):
            for tags in itertools.product(range(PT), repeat=n):
                lab = dict(zip(internal, labels))
                sym = lambda c: lab[c] if not isinstance(c, int) else NT + tags[c]  # noqa: E731
                lp = float(lr[lab[t]]) + sum(float(le[tags[i], words[i]]) for i in range(n))
                lp += sum(float(lb[lab[c], sym(c[0]), sym(c[1])]) for c in internal)
                total += math.exp(lp)
    got = inside_full(lr, lb, le, torch.tensor([words]), torch.tensor([n]))
    assert abs(float(got[0]) - math.log(total)) < 1e-10


def exact_cp(log_binary):
    """An exact TD decomposition of any normalised rule tensor with r = NT * S, inside the TD-PCFG
    family (U rows and V, W columns stochastic): component (A', B') puts U = delta_{A A'} *
    p(B' | A'), V = delta_{B B'}, W = p(C | A', B')."""
    NT, S, _ = log_binary.shape
    T = log_binary.exp()
    pB = T.sum(-1)  # [NT, S] p(B | A)
    U = torch.zeros(NT, NT * S, dtype=T.dtype)
    V = torch.zeros(S, NT * S, dtype=T.dtype)
    W = torch.zeros(S, NT * S, dtype=T.dtype)
    for a in range(NT):
        for b in range(S):
            r = a * S + b
            U[a, r] = pB[a, b]
            V[b, r] = 1.0
            W[:, r] = T[a, b] / pB[a, b]
    return U, V, W


@pytest.mark.parametrize("n", [2, 5, 6])
def test_rank_space_with_exact_full_rank_factors_equals_full(n):
    """'Low rank with full rank equals full': any rule tensor has an exact TD decomposition of rank
    NT * S (exact_cp); the rank-space inside on it must equal the full-rank inside."""
    NT, PT, V = 3, 4, 6
    lr, lb, le = random_grammar(NT, PT, V, seed=20 + n)
    U, Vf, W = exact_cp(lb)
    assert torch.allclose(torch.einsum("ar,br,cr->abc", U, Vf, W), lb.exp(), atol=1e-14)
    ids = torch.randint(0, V, (2, n), generator=torch.Generator().manual_seed(n))
    lengths = torch.tensor([n, 2])
    full = inside_full(lr, lb, le, ids, lengths)
    rank = inside_rank(lr, U, Vf, W, le, ids, lengths)
    assert torch.allclose(full, rank, atol=1e-10, rtol=0)


@pytest.mark.parametrize("rank", [None, 5])
def test_model_log_likelihood_matches_enumeration_and_gradients(rank):
    """The neural model (float64) against enumeration with its own materialised rules(); for the
    rank model this ties the rank-space DP to the implied full tensor. Gradients: the rule
    gradients of the DP equal those of the enumeration."""
    torch.manual_seed(0)
    model = PCFG(3, 4, 9, rank=rank, emb_dim=16).double()
    ids = torch.tensor([[1, 4, 2, 8, 0], [3, 3, 7, 0, 0]])
    lengths = torch.tensor([5, 3])
    ll = model.log_likelihood(ids, lengths)
    lr, lb, le = model.rules()
    for b in range(2):
        ref, _ = enumerate_inside(lr, lb, le, ids[b, : lengths[b]].tolist())
        assert abs(float(ll[b].detach()) - ref) < 1e-9
    params = [p for p in model.parameters()]
    g_dp = torch.autograd.grad(ll.sum(), params, allow_unused=True)
    lr, lb, le = model.rules()
    ref = sum(
        torch.logsumexp(
            torch.stack(
                [
                    (lr.exp() * tree_value(t, lb.exp(), le.exp()[:, ids[b, : lengths[b]]], 3)[:3]).sum().log()
                    for t in all_trees(0, int(lengths[b]))
                ]
            ),
            0,
        )
        for b in range(2)
    )
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    for a, c in zip(g_dp, g_ref):
        if a is None:
            assert c is None or float(c.abs().max()) == 0
        else:
            assert torch.allclose(a, c, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("rank", [None, 4])
def test_span_marginals_and_mbr_parse_equal_enumeration(rank):
    torch.manual_seed(1)
    model = PCFG(3, 3, 6, rank=rank, emb_dim=16).double()
    # sharpen the random grammar so the best tree is well separated
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    n = 6
    ids = torch.randint(0, 6, (2, n), generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([n, 5])
    marg = model.span_marginals(ids, lengths)
    trees = model.parse(ids, lengths)
    lr, lb, le = model.rules()
    for b in range(2):
        m = int(lengths[b])
        logz, probs = enumerate_inside(lr, lb, le, ids[b, :m].tolist())
        z = math.exp(logz)
        ref = np.zeros((m + 1, m + 1))
        for t, p in probs.items():
            for i, j in tree_spans(t)[0]:
                ref[i, j] += p / z
        assert np.allclose(marg[b, : m + 1, : m + 1].numpy(), ref, atol=1e-9)
        # MBR: the enumerated tree with the largest summed marginal
        best = max(probs, key=lambda t: sum(ref[i, j] for i, j in tree_spans(t)[0]))
        assert {c[0] for c in trees[b]} == tree_spans(best)[0]


def test_mbr_tree_brute_force():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 6):
        m = rng.random((n + 1, n + 1))
        tree = mbr_tree(m, n)
        best = max(all_trees(0, n), key=lambda t: sum(m[i, j] for i, j in tree_spans(t)[0]))
        assert {c[0] for c in tree} == tree_spans(best)[0]


@pytest.mark.parametrize("rank", [None, 16])
def test_float32_stable_at_length_40(rank):
    torch.manual_seed(0)
    model = PCFG(10, 20, 500, rank=rank, emb_dim=32)
    ids = torch.randint(0, 500, (2, 40))
    ll = model.log_likelihood(ids, torch.tensor([40, 33]))
    assert torch.isfinite(ll).all() and (ll < 0).all()
    ll.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ref = model.double().log_likelihood(ids, torch.tensor([40, 33]))
    assert torch.allclose(ll.double(), ref, rtol=1e-4)


def test_bad_input():
    model = PCFG(3, 4, 10, max_length=8, emb_dim=8)
    ok = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="vocabulary"):
        model.log_likelihood(torch.tensor([[1, 10, 3]]), [3])
    with pytest.raises(ValueError, match="vocabulary"):
        model.log_likelihood(torch.tensor([[1, -1, 3]]), [3])
    with pytest.raises(ValueError, match=">= 2"):
        model.log_likelihood(ok, [0])
    with pytest.raises(ValueError, match="max_length"):
        model.log_likelihood(torch.ones(1, 9, dtype=torch.long), [9])
    with pytest.raises(ValueError, match="exceeds the ids width"):
        model.log_likelihood(ok, [4])
    with pytest.raises(ValueError, match="rank"):
        PCFG(3, 4, 10, rank=0)
    # padding beyond a sentence's length may hold anything
    assert torch.isfinite(model.log_likelihood(torch.tensor([[1, 2, 99]]), [2])).all()


def test_padding_with_impossible_pad_word_keeps_marginals_finite():
    """A grammar that cannot emit the pad id (the true grammar of pcfg_synth): marginals of a
    padded batch equal those of each sentence alone (no NaN leaking back from padding)."""
    NT, PT, V = 3, 4, 6
    lr, lb, le = random_grammar(NT, PT, V, seed=5)
    le = le.clone()
    le[:, 0] = -float("inf")
    le = le.log_softmax(-1)
    ids = torch.tensor([[1, 2, 3, 4, 5], [2, 3, 1, 0, 0]])
    lengths = torch.tensor([5, 3])
    sw = torch.zeros(2, 6, 6, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(inside_full(lr, lb, le, ids, lengths, sw).sum(), sw)
    assert torch.isfinite(g).all()
    sw1 = torch.zeros(1, 4, 4, dtype=torch.float64, requires_grad=True)
    (g1,) = torch.autograd.grad(inside_full(lr, lb, le, ids[1:, :3], lengths[1:], sw1).sum(), sw1)
    assert torch.allclose(g[1, :4, :4], g1[0], atol=1e-12)


def test_bench_structured_pcfg_family_builds_a_finite_training_step():
    """``longseq bench structured --family pcfg``: the worker-side step builder (full and rank space)
    runs one inside + backward with finite loss and gradients on every parameter."""
    from longseq.bench.structured_worker import FAMILIES

    fam = FAMILIES["pcfg"]
    for rank in (None, 4):
        job = {
            "size": 3,
            "rank": rank,
            "settings": {**fam.settings, "batch": 2, "length": 5, "vocab_size": 11, "emb_dim": 8},
        }
        step, n_params = fam.build_step(job, torch, "cpu", torch.float64)
        loss = step()
        assert torch.isfinite(loss) and n_params > 0
