"""logic_inference: relations recomputed from truth tables by an independent evaluator, the
operator-count split, determinism, models on it."""

import numpy as np
import pytest
import torch

import longseq.tasks as tasks
from longseq.tasks import logic

SMALL = dict(n_train=200, n_val=50, n_test_per_ops=10)


def _worlds(tokens):
    return {w for w in range(64) if logic.evaluate(tokens, w)}


def _relation_from_sets(x, y):
    every = set(range(64))
    if x == y:
        return 0
    if x < y:
        return 1
    if x > y:
        return 2
    disjoint, exhaustive = not (x & y), (x | y) == every
    return 3 if disjoint and exhaustive else 4 if disjoint else 5 if exhaustive else 6


def _unpad(row, mask):
    return row[mask].tolist()


def test_labels_equal_truth_table_relations():
    task = tasks.build("logic_inference", **SMALL)
    seen = set()
    for split in (task.train, task.test):
        for r in range(len(split)):
            x = _unpad(split.inputs[r, 0], split.mask[r, 0])
            y = _unpad(split.inputs[r, 1], split.mask[r, 1])
            sx, sy = _worlds(x), _worlds(y)
            assert 0 < len(sx) < 64 and 0 < len(sy) < 64
            lab = int(split.targets[r])
            assert lab == _relation_from_sets(sx, sy)
            seen.add(lab)
    assert len(seen) >= 6  # (almost) every relation occurs


def test_relation_by_hand():
    a, b = logic._VAR_MASK[0], logic._VAR_MASK[1]
    assert logic.relation(a, a) == 0
    assert logic.relation(a & b, a) == 1 and logic.relation(a, a & b) == 2
    assert logic.relation(a, logic.ALL & ~a) == 3
    assert logic.relation(a & b, logic.ALL & ~a) == 4
    assert logic.relation(a | b, logic.ALL & ~a) == 5
    assert logic.relation(a, b) == 6


def test_operator_count_split():
    task = tasks.build("logic_inference", **SMALL)
    ops = lambda t: sum(int(v) in (logic.NOT, logic.AND, logic.OR) for v in t)  # noqa: E731
    for split, hi in ((task.train, 6), (task.validation, 6), (task.test, 12)):
        for r in range(len(split)):
            n = max(ops(_unpad(split.inputs[r, k], split.mask[r, k])) for k in (0, 1))
            assert n == int(split.n_ops[r]) and 1 <= n <= hi
    assert np.bincount(task.test.n_ops.numpy())[1:].tolist() == [10] * 12
    assert task.meta.extra["pair"] and task.meta.num_classes == 7


def test_deterministic_and_errors():
    a = tasks.build("logic_inference", seed=1, **SMALL)
    b = tasks.build("logic_inference", seed=1, **SMALL)
    assert a.test.fingerprint() == b.test.fingerprint() and a.train.fingerprint() == b.train.fingerprint()
    with pytest.raises(ValueError, match="train_max_ops"):
        tasks.build("logic_inference", train_max_ops=13, **SMALL)


@pytest.mark.parametrize("mixer", ["onlstm", "structformer", "lstm", "softmax"])
def test_models_run_on_it(mixer):
    from longseq.train import build_model

    task = tasks.build("logic_inference", **SMALL)
    torch.manual_seed(0)
    opts = {"onlstm": {"chunk_size": 4}, "structformer": {"conv_size": 3}}.get(mixer)
    m = build_model(task, mixer, d_model=16, n_layers=1, mixer_options=opts)
    b = task.train.batch(torch.arange(8))
    logits = m(b["inputs"], b["mask"])
    assert logits.shape == (8, 7)
    m.loss(logits, b["targets"]).backward()
