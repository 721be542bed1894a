"""MQAR generator against its spec: labels recomputed from the token sequence."""

import numpy as np
import pytest

import longseq
from longseq.tasks import IGNORE
from longseq.tasks.recall import sample_without_replacement


def test_deterministic_and_seed_dependent():
    a = longseq.tasks.build("mqar", n_train=200, n_val=10, n_test=10)
    b = longseq.tasks.build("mqar", n_train=200, n_val=10, n_test=10)
    c = longseq.tasks.build("mqar", n_train=200, n_val=10, n_test=10, seed=1)
    assert a.train.fingerprint() == b.train.fingerprint() != c.train.fingerprint()


@pytest.mark.parametrize("seq_len,kv", [(64, 4), (128, 8), (256, 16)])
def test_labels_recomputed_from_sequence(seq_len, kv):
    t = longseq.tasks.build("mqar", preset="zoology", seq_len=seq_len, num_kv_pairs=kv, n_train=64, n_val=8, n_test=8)
    V = t.meta.vocab_size
    for x, y in zip(t.train.inputs.tolist(), t.train.targets.tolist()):
        assert len(x) == seq_len
        keys, values = x[0 : 2 * kv : 2], x[1 : 2 * kv : 2]
        assert len(set(keys)) == kv and all(1 <= k < V // 2 for k in keys)
        assert all(V // 2 <= v < V for v in values)
        pairs = dict(zip(keys, values))
        answered = [i for i, lab in enumerate(y) if lab != IGNORE]
        assert len(answered) == kv  # every key queried exactly once
        assert sorted(x[i] for i in answered) == sorted(keys)
        for i in answered:  # the target after a query key is its value
            assert i >= 2 * kv and y[i] == pairs[x[i]]


def test_classify_variant():
    t = longseq.tasks.build("mqar", classify=True, n_train=50, n_val=5, n_test=5)
    half = t.meta.vocab_size // 2
    kv = t.meta.extra["config"]["num_kv_pairs"]
    assert t.meta.kind == "classification" and t.meta.num_classes == half
    for x, y in zip(t.train.inputs.tolist(), t.train.targets.tolist()):
        pairs = dict(zip(x[0 : 2 * kv : 2], x[1 : 2 * kv : 2]))
        assert pairs[x[-1]] - half == y


def test_sampling_without_replacement_is_distinct_and_weighted():
    rng = np.random.default_rng(0)
    s = sample_without_replacement(rng, 2000, 10, 3, p=np.array([0.5] + [0.5 / 9] * 9))
    assert all(len(set(r)) == 3 for r in s.tolist())
    assert (s[:, 0] == 0).mean() > 0.4  # the heavy item is usually drawn first
    u = sample_without_replacement(rng, 500, 1000, 8)
    assert all(len(set(r)) == 8 for r in u.tolist())


def test_bad_settings():
    with pytest.raises(ValueError, match="preset"):
        longseq.tasks.build("mqar", preset="huge")
    with pytest.raises(ValueError, match="unknown setting"):
        longseq.tasks.build("mqar", n_trian=3)
    with pytest.raises(ValueError, match="cannot hold"):
        longseq.tasks.build("mqar", seq_len=8, num_kv_pairs=8, n_train=2, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="unknown task"):
        longseq.tasks.build("nope")
