"""pcfg_synth / lcfrs_synth: determinism, valid gold trees, baselines, F1 by hand."""

import numpy as np
import pytest
import torch

from longseq import trees as T
from longseq.tasks import build, stats
from longseq.tasks.treebank import _cfg_tables, viterbi_cfg, vocabulary

SMALL = dict(n_train=60, n_val=30, n_test=30)


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path))


def _check_tree(cons, n, binary_continuous):
    """Root first, every word present, blocks well formed, constituents laminar (nest or disjoint),
    and (continuous grammars) exactly 2n - 1 nodes of a binary tree."""
    sets = [frozenset(x for i, j in T.normalize(c) for x in range(i, j)) for c in cons]
    assert sets[0] == frozenset(range(n))
    assert all(frozenset([i]) in sets for i in range(n))
    for c in cons:
        c = T.normalize(c)
        assert len(c) <= 2 and c[0][0] >= 0 and c[-1][1] <= n
    for a in sets:
        for b in sets:
            assert a <= b or b <= a or not (a & b)
    if binary_continuous:
        assert len(set(sets)) == 2 * n - 1
        assert all(len(T.normalize(c)) == 1 for c in cons)
    else:
        # every internal node has exactly two children in the laminar family: 2n - 1 nodes
        assert len(set(sets)) == 2 * n - 1


@pytest.mark.parametrize("name", ["pcfg_synth", "lcfrs_synth"])
def test_determinism_and_valid_trees(name):
    a, b = build(name, seed=3, **SMALL), build(name, seed=3, **SMALL)
    c = build(name, seed=4, **SMALL)
    assert a.train.fingerprint() == b.train.fingerprint() != c.train.fingerprint()
    assert a.test.trees() == b.test.trees()
    assert a.meta.kind == "parsing"
    V = len(vocabulary(name))
    for split in a.splits().values():
        batch = split.batch(torch.arange(len(split)))
        assert batch["inputs"].max() < V and batch["lengths"].min() >= 3
        assert (batch["mask"].sum(1) == batch["lengths"]).all()
        last = torch.arange(batch["inputs"].shape[1])[None, :] >= batch["lengths"][:, None] - 1
        assert ((batch["targets"] == -100) == last).all()
        assert (batch["targets"][:, :-1][~last[:, :-1]] == batch["inputs"][:, 1:][~last[:, :-1]]).all()
        for s, cons in enumerate(split.trees()):
            n = int(batch["lengths"][s])
            assert (batch["inputs"][s, :n] > 0).all() and (batch["inputs"][s, n:] == 0).all()
            _check_tree(cons, n, name == "pcfg_synth")
        golds, ns = split.trees(), [int(x) for x in split.lengths]
        assert T.corpus_f1(golds, golds, ns)["sentence_f1"] == 1.0


def test_lcfrs_synth_has_discontinuous_constituents():
    task = build("lcfrs_synth", seed=0, **SMALL)
    golds = task.train.trees()
    disc = [c for g in golds for c in g if len(c) > 1]
    assert len(disc) > 5
    ns = [int(x) for x in task.train.lengths]
    assert T.corpus_f1(golds, golds, ns, only_discontinuous=True)["sentence_f1"] == 1.0
    base = task.meta.extra["baselines"]["test"]
    assert 0 < base["best_continuous"] < 1 and base["discontinuous_fraction"] > 0


def test_stats_report_baselines_and_oracle():
    task = build("pcfg_synth", seed=0, **SMALL)
    st = stats(task)
    base = st["baselines"]["test"]
    assert set(base) == {"right_branching", "left_branching", "oracle_viterbi"}
    assert base["oracle_viterbi"] > base["right_branching"]


def test_right_branching_f1_by_hand():
    # "the dog chased the cat": gold ((the dog) (chased (the cat)))
    gold = T.spans_of((("the", "dog"), ("chased", ("the", "cat"))))
    # right-branching nontrivial spans: [1,5) [2,5) [3,5); gold nontrivial: [0,2) [2,5) [3,5)
    # -> 2 hits, precision 2/3, recall 2/3, F1 2/3
    assert T.sentence_f1(T.right_branching(5), gold, 5) == pytest.approx(2 / 3)


def test_oracle_viterbi_parses_unambiguous_sentence():
    vocab = vocabulary("pcfg_synth")
    words = "the dog chased the cat".split()
    ids = np.array([vocab.index(w) for w in words])
    tree = viterbi_cfg(ids, 5, _cfg_tables("pcfg_synth"))
    assert {c[0] for c in tree} == {(0, 5), (0, 2), (2, 5), (3, 5)} | {(i, i + 1) for i in range(5)}


@pytest.mark.parametrize("bad", [dict(min_length=1), dict(max_length=100), dict(n_train=0), dict(nope=1)])
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        build("pcfg_synth", **{**SMALL, **bad})


def test_mixer_models_refuse_parsing_tasks():
    from longseq.arena.runner import not_applicable
    from longseq.train import build_model

    task = build("pcfg_synth", **SMALL)
    with pytest.raises(ValueError, match="parsing task"):
        build_model(task, "softmax")
    assert "parsing" in not_applicable(task, "softmax", {})
