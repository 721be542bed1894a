"""CFL tasks (DuSell & Chiang 2020): exact lower bounds against hand formulas, enumeration and
Monte-Carlo estimates; sampling distribution; format; determinism; errors."""

import itertools
import math

import numpy as np
import pytest
import torch

import longseq.tasks as tasks
from longseq.tasks import IGNORE, cfl

SMALL = dict(
    train_lengths=[6, 12], val_lengths=[6, 12], test_lengths=[6, 16], n_train=40, n_val=20, n_test_per_length=2
)


def _g(name):
    return cfl.grammar(name, cfl.PRESETS[name]["quick"])


def test_marked_and_unmarked_reversal_bound_by_hand():
    # every string of a valid length is equally likely: -log p(w) = n log 2 + log |valid lengths|
    for name, half in (("marked_reversal", lambda ell: (ell - 1) // 2), ("unmarked_reversal", lambda ell: ell // 2)):
        task = tasks.build(name, **SMALL)
        lo, hi = SMALL["test_lengths"]
        valid = [ell for ell in range(lo, hi + 1) if (ell % 2 == 1) == (name == "marked_reversal")]
        s = task.test
        expect = torch.tensor(
            [half(int(ell)) * math.log(2) + math.log(len(valid)) for ell in s.lengths], dtype=torch.float64
        )
        torch.testing.assert_close(s.nll, expect, rtol=1e-10, atol=1e-10)
        bound = float(expect.sum() / (s.lengths + 1).sum())
        assert task.meta.extra["lower_bound"]["test"] == pytest.approx(bound, rel=1e-12)


def test_dyck_string_probability_by_hand():
    g = _g("dyck")
    s = cfl.mean_to_continue_prob(1)
    t = cfl.mean_to_continue_prob(40 - 1)
    # "()" : S -> T, T -> ( )        "([])" : S -> T, T -> ( S ), S -> T, T -> [ ]
    # "()[]": S -> S T, S -> T, T -> ( ), T -> [ ]   (T's rules are normalised over 2 bracket types)
    cases = {
        (0, 1): (1 - s) * (1 - t) / 2,
        (0, 2, 3, 1): (1 - s) * (t / 2) * (1 - s) * (1 - t) / 2,
        (0, 1, 2, 3): s * (1 - s) * ((1 - t) / 2) ** 2,
        (0, 1, 1, 0): 0.0,
    }
    for w, p in cases.items():
        assert g.inside(np.array([w]))[0] == pytest.approx(p, rel=1e-12, abs=1e-300)


def _padded_brute(w, k=2, mean_content=60, mean_pad=30):
    """p_G(w) for w = u a^p u^R: the sum over every split (content length n, padding symbol a)."""
    p, g = cfl.mean_to_continue_prob(mean_content), cfl.mean_to_continue_prob(mean_pad)
    total, ell = 0.0, len(w)
    for n in range(ell // 2 + 1):
        u, mid, v = w[:n], w[n : ell - n], w[ell - n :]
        if list(u[::-1]) != list(v):
            continue
        for a in range(k):
            if all(c == a for c in mid):
                total += (p / k) ** n * ((1 - p) / k) * g ** len(mid) * (1 - g)
    return total


def test_padded_reversal_inside_equals_sum_over_derivations():
    g = _g("padded_reversal")
    strings = np.array(list(itertools.product(range(2), repeat=6)))  # all 64 strings
    got = g.inside(strings)
    expect = np.array([_padded_brute(list(w)) for w in strings])
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-300)
    assert (got > 0).sum() < 64  # not everything is in the language


@pytest.mark.parametrize(
    "name,ell",
    [("marked_reversal", 7), ("unmarked_reversal", 8), ("padded_reversal", 7), ("dyck", 8), ("hardest_cfl", 6)],
)
def test_string_inside_sums_to_length_inside(name, ell):
    """Σ_{|w| = ℓ} p_G(w) (every string enumerated) equals the length inside weight I[S, ℓ]."""
    g = _g(name)
    strings = np.array(list(itertools.product(range(g.num_terminals), repeat=ell)))
    total = sum(g.inside(chunk).sum() for chunk in np.array_split(strings, max(1, len(strings) // 2048)))
    assert total == pytest.approx(g.length_inside(ell)[ell, g.start], rel=1e-10)


@pytest.mark.parametrize("name,ell", [("padded_reversal", 7), ("dyck", 8), ("hardest_cfl", 6)])
def test_sampler_matches_exact_distribution_monte_carlo(name, ell):
    """Monte-Carlo: the sampler's strings have the exact p(w | ℓ) (total variation on a sample of
    6,000) and their mean -log p(w | ℓ) estimates the exact entropy (within 5 standard errors)."""
    g = _g(name)
    strings = np.array(list(itertools.product(range(g.num_terminals), repeat=ell)))
    p = np.concatenate([g.inside(c) for c in np.array_split(strings, max(1, len(strings) // 2048))])
    p = p / p.sum()
    support = {tuple(w): q for w, q in zip(strings.tolist(), p) if q > 0}
    H = -sum(q * math.log(q) for q in support.values())
    rng = np.random.default_rng(0)
    N = 6000
    draws = [tuple(g.sample(ell, rng)) for _ in range(N)]
    assert all(d in support for d in draws), "sampled a string outside the language"
    nll = np.array([-math.log(support[d]) for d in draws])
    assert abs(nll.mean() - H) < 5 * nll.std() / math.sqrt(N) + 1e-12
    counts: dict = {}
    for d in draws:
        counts[d] = counts.get(d, 0) + 1
    tv = 0.5 * sum(abs(counts.get(w, 0) / N - q) for w, q in support.items())
    # expected TV of an N-sample empirical distribution is about sqrt(|support| / (2 pi N)); bound it loosely
    assert tv < 2.0 * math.sqrt(len(support) / N) + 0.02


def test_split_lower_bound_monte_carlo_consistent():
    """The split's bound is an average of exact -log p(w): on a larger sample of the same lengths
    it matches the per-length entropies computed by enumeration."""
    name, lengths = "dyck", [4, 6]
    g = _g(name)
    H = {}
    for ell in lengths:
        strings = np.array(list(itertools.product(range(4), repeat=ell)))
        p = g.inside(strings)
        p = p[p > 0] / p.sum()
        H[ell] = -(p * np.log(p)).sum() + math.log(len(lengths))  # entropy of (length, string)
    expect = sum(H.values()) / sum(ell + 1 for ell in lengths)  # equal counts per length
    s = cfl.sample_split(g, lengths, np.random.default_rng(1), per_length=3000)
    assert s.lower_bound() == pytest.approx(expect, rel=0.02)


def test_format_lengths_and_targets():
    task = tasks.build("dyck", preset="quick", n_train=30, n_val=10, n_test_per_length=1)
    k = task.meta.extra["symbols"]
    eos, bos = k, k + 1
    assert task.meta.vocab_size == k + 2 and task.meta.metric == "ce_gap"
    for split, (lo, hi) in (("train", (40, 80)), ("test", (40, 100))):
        s = getattr(task, split)
        assert ((s.lengths >= lo) & (s.lengths <= hi)).all()
        for r in range(len(s)):
            ell = int(s.lengths[r])
            assert s.inputs[r, 0] == bos and s.targets[r, ell] == eos
            assert torch.equal(s.inputs[r, 1 : ell + 1], s.targets[r, :ell])
            assert s.mask[r, : ell + 1].all() and not s.mask[r, ell + 1 :].any()
            assert (s.targets[r, ell + 1 :] == IGNORE).all()
    assert int(task.test.lengths.max()) == 100 and task.train.nll is None
    # every valid test length appears n_test_per_length times
    assert sorted(set(task.test.lengths.tolist())) == list(range(40, 101, 2))


def test_deterministic_per_seed():
    a = tasks.build("hardest_cfl", seed=3, **SMALL)
    b = tasks.build("hardest_cfl", seed=3, **SMALL)
    c = tasks.build("hardest_cfl", seed=4, **SMALL)
    for split in ("train", "validation", "test"):
        assert getattr(a, split).fingerprint() == getattr(b, split).fingerprint()
    assert a.train.fingerprint() != c.train.fingerprint()
    assert a.meta.extra["lower_bound"] == b.meta.extra["lower_bound"]


def test_trainer_reports_gap():
    from longseq.train import build_model
    from longseq.train.trainer import evaluate

    task = tasks.build("marked_reversal", **SMALL)
    torch.manual_seed(0)
    model = build_model(task, "softmax", d_model=16)
    ev = evaluate(model, task.test, batch_size=7, metric="ce_gap")
    assert ev["lower_bound"] == pytest.approx(task.meta.extra["lower_bound"]["test"], rel=1e-9)
    assert ev["ce_gap"] == pytest.approx(ev["loss"] - ev["lower_bound"], rel=1e-12)
    assert ev["ce_gap"] > 0


def test_bad_settings():
    with pytest.raises(ValueError, match="test_lengths"):
        tasks.build("dyck", test_lengths=[10, 5])
    with pytest.raises(ValueError, match="derives no string"):
        tasks.build("marked_reversal", **{**SMALL, "val_lengths": [4, 4]})
    with pytest.raises(ValueError, match="unknown setting"):
        tasks.build("dyck", depth=3)
    with pytest.raises(ValueError, match="mean_nesting_depth"):
        tasks.build("dyck", mean_nesting_depth=1, **SMALL)
