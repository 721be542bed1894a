"""Recall/copy synthetics: answers recomputed from the sequences, determinism, presets."""

import numpy as np
import pytest

import longseq.tasks as tasks
from longseq.tasks import IGNORE


def _answers(split):
    t = split.targets.numpy()
    return t, t != IGNORE


def test_induction_head():
    task = tasks.build("induction_head", preset="quick", seed=0, n_train=200, n_val=20, n_test=20)
    V = task.meta.vocab_size
    x, (t, due) = task.train.inputs.numpy(), _answers(task.train)
    assert x.shape == (200, 31) and task.meta.kind == "lm"
    assert (due.sum(1) == 1).all() and due[:, -1].all()
    for row, tgt in zip(x, t[:, -1]):
        trig = np.flatnonzero(row[:-1] == V - 2)
        assert len(trig) == 1 and row[-1] == V - 2
        assert row[trig[0] + 1] == tgt
    assert x.max() <= V - 2


def test_assoc_recall():
    task = tasks.build("assoc_recall", preset="quick", seed=0, n_train=200, n_val=20, n_test=20)
    V = task.meta.vocab_size
    K = (V - 2) // 2
    x, (t, due) = task.train.inputs.numpy(), _answers(task.train)
    assert x.shape == (200, 20) and due[:, -1].all() and due.sum() == 200
    for row, tgt in zip(x, t[:, -1]):
        assert row[-2] == V - 2
        pairs = row[:-2].reshape(-1, 2)
        assert (pairs[:, 0] < K).all() and ((pairs[:, 1] >= K) & (pairs[:, 1] < 2 * K)).all()
        kv = {}
        for k, v in pairs:
            assert kv.setdefault(k, v) == v, "a key keeps its value within a sequence"
        assert kv[row[-1]] == tgt


def test_selective_copy():
    task = tasks.build("selective_copy", preset="quick", seed=0, n_train=100, n_val=10, n_test=10)
    cfg = task.meta.extra["config"]
    L, M, V = cfg["seq_len"], cfg["n_copy"], cfg["vocab_size"]
    x, (t, due) = task.train.inputs.numpy(), _answers(task.train)
    assert x.shape == (100, L + M)
    assert due[:, L:].all() and not due[:, :L].any()
    for row, tgt in zip(x, t):
        ctx = row[:L]
        data = ctx[ctx != 0]
        assert len(data) == M and (row[L:] == V - 1).all()
        np.testing.assert_array_equal(data, tgt[L:])


@pytest.mark.parametrize("name", ["induction_head", "assoc_recall", "selective_copy"])
def test_deterministic_presets_and_errors(name):
    small = dict(n_train=50, n_val=10, n_test=10)
    a = tasks.build(name, preset="quick", seed=0, **small)
    b = tasks.build(name, preset="quick", seed=0, **small)
    c = tasks.build(name, preset="quick", seed=1, **small)
    assert a.train.fingerprint() == b.train.fingerprint() != c.train.fingerprint()
    assert a.train.fingerprint() != a.test.fingerprint()
    long = tasks.build(name, preset="long", n_train=2, n_val=1, n_test=1)
    assert long.meta.seq_len >= 1024
    assert tasks.build(name, preset="lra", n_train=2, n_val=1, n_test=1).train_defaults["lr"] == 5e-4
    assert {"d_model", "n_layers", "num_heads"} <= set(a.model_defaults)
    with pytest.raises(ValueError, match="unknown setting"):
        tasks.build(name, preset="quick", sequence_length=3)
    with pytest.raises(ValueError, match="seq_len"):
        tasks.build(name, preset="quick", seq_len=1)


def test_stats(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path))
    from longseq.tasks.stats import stats

    s = stats(tasks.build("listops", preset="quick", n_train=100, n_val=10, n_test=10, min_length=10, max_length=60))
    tr = s["splits"]["train"]
    assert s["num_classes"] == 10 and tr["n"] == 100 and sum(tr["class_counts"]) == 100
    assert 10 < tr["length"]["min"] <= tr["length"]["median"] <= tr["length"]["max"] < 60
    assert 0.1 <= tr["majority_baseline"] <= 1
    s = stats(tasks.build("selective_copy", preset="quick", n_train=20, n_val=5, n_test=5))
    assert s["kind"] == "lm" and s["splits"]["test"]["targets_per_example"] == {"min": 4, "mean": 4.0, "max": 4}
    assert s["splits"]["train"]["length"]["max"] == s["seq_len"]
