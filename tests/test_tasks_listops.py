"""ListOps generator vs its spec: labels by an independent evaluator, lengths, dedup, determinism."""

import numpy as np
import pytest
import torch

import longseq.tasks as tasks
from longseq.tasks.listops import VOCAB, decode, generate

TINY = dict(n_train=300, n_val=50, n_test=50, min_length=20, max_length=120)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LONGSEQ_PROGRESS", "0")


def evaluate(tokens: list[str]) -> int:
    """Plain stack evaluator of the bracket-free token string (`[OP args... ]`)."""
    stack: list[list] = []
    result = None
    for t in tokens:
        if t.startswith("["):
            stack.append([t])
            continue
        if t == "]":
            op, *args = stack.pop()
            v = {"[MIN": min(args), "[MAX": max(args), "[SM": sum(args) % 10, "[MED": int(np.median(args))}[op]
        else:
            v = int(t)
        if stack:
            stack[-1].append(v)
        else:
            assert result is None, "more than one top-level expression"
            result = v
    assert not stack and result is not None
    return result


def depth_and_arity_ok(tokens: list[str], max_depth=10, max_args=10) -> bool:
    depth, counts = 0, []
    for t in tokens:
        if t.startswith("["):
            if counts:
                counts[-1] += 1
            depth += 1
            counts.append(0)
            if depth >= max_depth:  # operators only above max_depth (root depth 1)
                return False
        elif t == "]":
            if not 2 <= counts.pop() <= max_args:
                return False
            depth -= 1
        else:
            if counts:
                counts[-1] += 1
            if depth + 1 > max_depth:
                return False
    return True


def test_labels_lengths_and_shape():
    task = tasks.build("listops", preset="quick", seed=3, **TINY)
    assert task.meta.num_classes == 10 and task.meta.vocab_size == len(VOCAB) == 16
    assert task.meta.seq_len == 119
    seen = set()
    for split in task.splits().values():
        b = split.batch(torch.arange(len(split)))
        assert b["inputs"].shape == (len(split), 119) and b["inputs"].dtype == torch.int64
        for ids, m, y in zip(b["inputs"], b["mask"], b["targets"]):
            toks = decode(ids)
            assert len(toks) == int(m.sum()) and 20 < len(toks) < 120
            assert bool((ids[m.logical_not()] == 0).all()) and bool(m[: len(toks)].all())
            assert evaluate(toks) == int(y)
            assert depth_and_arity_ok(toks)
            key = " ".join(toks)
            assert key not in seen, "duplicate expression (within or across splits)"
            seen.add(key)


def test_lra_spec_lengths_and_label_skew():
    tokens, lengths, labels = generate(60, 0, min_length=500, max_length=2000, show_progress=False)
    assert tokens.shape == (60, 1999) and lengths.min() > 500 and lengths.max() < 2000
    for row, n, y in zip(tokens[:10], lengths, labels):
        assert evaluate(decode(row)) == y and len(decode(row)) == n
    # many trees: labels 0 and 9 are the most frequent (MIN/MAX of many digits)
    _, _, y = generate(3000, 1, min_length=10, max_length=400, show_progress=False)
    freq = np.bincount(y, minlength=10) / len(y)
    assert freq[0] > 0.12 and freq[9] > 0.12 and freq[1:9].max() < freq[[0, 9]].min()


def test_deterministic_and_seeded():
    a = tasks.build("listops", preset="quick", seed=0, **TINY)
    b = tasks.build("listops", preset="quick", seed=0, **TINY)
    c = tasks.build("listops", preset="quick", seed=1, **TINY)
    for name in ("train", "validation", "test"):
        assert a.splits()[name].fingerprint() == b.splits()[name].fingerprint()
        assert a.splits()[name].fingerprint() != c.splits()[name].fingerprint()


def test_cache_round_trip_is_identical(tmp_path):
    fresh = tasks.build("listops", preset="quick", seed=2, cache=False, **TINY)
    stored = tasks.build("listops", preset="quick", seed=2, cache=True, **TINY)
    again = tasks.build("listops", preset="quick", seed=2, cache=True, **TINY)
    assert list((tmp_path / "data" / "listops").iterdir())
    for name in ("train", "test"):
        fp = fresh.splits()[name].fingerprint(n=len(fresh.splits()[name]))
        assert stored.splits()[name].fingerprint(n=10**6) == fp == again.splits()[name].fingerprint(n=10**6)


def test_presets_and_errors():
    task = tasks.build("listops", preset="lra", n_train=4, n_val=2, n_test=2)
    assert task.meta.seq_len == 1999 and task.model_defaults["pooling"] == "mean"
    assert {"steps", "batch_size", "lr", "warmup", "weight_decay"} <= set(task.train_defaults)
    with pytest.raises(ValueError, match="preset"):
        tasks.build("listops", preset="huge")
    with pytest.raises(ValueError, match="unknown setting"):
        tasks.build("listops", preset="quick", n_trian=3)
    with pytest.raises(ValueError, match="min_length"):
        tasks.build("listops", preset="quick", min_length=50, max_length=40)
