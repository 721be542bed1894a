"""Recall and copying synthetics: ``assoc_recall``, ``induction_head`` (H3, Fu et al. 2023, sec. 3.1
and app. E.1; safari ``src/dataloaders/synthetics.py``) and ``selective_copy`` (Mamba, Gu & Dao
2023, sec. 3.1 / app. E.1). All are ``lm`` tasks: inputs ``[N, L]``, targets ``IGNORE`` except
where an answer is due; accuracy is measured on those positions only (H3 takes the loss and the
accuracy on the final token only).

* ``induction_head``: ``seq_len`` tokens drawn uniformly from the ``vocab_size - 2`` ordinary
  tokens; once, at a random position, the trigger ``=>`` (id ``vocab_size - 2``) is followed by a
  token ``t``; the input ends with ``=>`` and the answer at that last position is ``t``. Input
  length ``seq_len + 1``.
* ``assoc_recall``: keys are ids ``[0, K)``, values ``[K, 2K)`` with ``K = (vocab_size - 2) // 2``;
  each sequence draws its own key -> value map, then ``seq_len // 2 - 1`` pairs ``k v`` with keys
  drawn uniformly (keys repeat, always with the same value), then ``=> q`` (trigger id
  ``vocab_size - 2``) with ``q`` a key that occurs in the context; the answer at the last
  position is ``q``'s value. Input length ``seq_len``.
* ``selective_copy``: a context of ``seq_len`` tokens, all noise (id 0) except ``n_copy`` data
  tokens (ids ``[1, vocab_size - 1)``) at random distinct positions, followed by ``n_copy`` copy
  markers (id ``vocab_size - 1``); the answer at the ``j``-th marker is the ``j``-th data token.
  Input length ``seq_len + n_copy``. Solving it needs input-dependent (selective) memory.

Presets:
* ``quick`` — a few CPU minutes for a 2-layer softmax model (stated sizes are in ``PRESETS``).
* ``lra`` — the published setting: H3's (induction head: vocab 20, length 30; associative recall:
  vocab 10, length 20; 5,000 train / 500 test examples; H3 trains 2-layer d_model 32 models with
  AdamW lr 5e-4, weight decay 0.1, batch 32 for 400 (AR: 200) epochs) and Mamba's selective
  copying (vocab 16, 16 tokens to copy, context 4,096).
* ``long`` (length 1,024) and ``long16k`` (16,384): long-context versions (the Hyena scale-up used
  AR with vocab 30 and 4,000 training examples, kept here).
The task docstrings' AMBIGUOUS point: tasks.md lists H3's AR at length 20 (the ``*-vs10`` configs)
while the issue text says lengths 30-40; we use 30 (induction) and 20 (AR) as in the safari configs.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import IGNORE, Split, Task, TaskMeta, register_task, resolve_preset

_TAGS = {"induction_head": 0x696E6468, "assoc_recall": 0x61737263, "selective_copy": 0x73636F70}

PRESETS = {
    "induction_head": {
        "quick": dict(vocab_size=20, seq_len=30, n_train=5_000, n_val=500, n_test=500),
        "lra": dict(vocab_size=20, seq_len=30, n_train=5_000, n_val=500, n_test=500),
        "long": dict(vocab_size=30, seq_len=1_024, n_train=4_000, n_val=500, n_test=500),
        "long16k": dict(vocab_size=30, seq_len=16_384, n_train=4_000, n_val=200, n_test=200),
    },
    "assoc_recall": {
        "quick": dict(vocab_size=10, seq_len=20, n_train=5_000, n_val=500, n_test=500),
        "lra": dict(vocab_size=10, seq_len=20, n_train=5_000, n_val=500, n_test=500),
        "long": dict(vocab_size=30, seq_len=1_024, n_train=4_000, n_val=500, n_test=500),
        "long16k": dict(vocab_size=30, seq_len=16_384, n_train=4_000, n_val=200, n_test=200),
    },
    "selective_copy": {
        "quick": dict(vocab_size=10, seq_len=64, n_copy=4, n_train=10_000, n_val=500, n_test=500),
        "lra": dict(vocab_size=16, seq_len=4_096, n_copy=16, n_train=20_000, n_val=500, n_test=1_000),
        "long": dict(vocab_size=16, seq_len=1_024, n_copy=16, n_train=20_000, n_val=500, n_test=1_000),
        "long16k": dict(vocab_size=16, seq_len=16_384, n_copy=16, n_train=4_000, n_val=200, n_test=200),
    },
}
MODEL_DEFAULTS = {
    "quick": dict(d_model=64, n_layers=2, num_heads=2),
    "lra": dict(d_model=32, n_layers=2, num_heads=1),  # H3's lm_simple size
    "long": dict(d_model=128, n_layers=2, num_heads=2),
    "long16k": dict(d_model=128, n_layers=2, num_heads=2),
}
TRAIN_DEFAULTS = {
    "quick": dict(steps=2_000, batch_size=32, lr=2e-3, warmup=100, weight_decay=0.1),
    "lra": dict(steps=62_500, batch_size=32, lr=5e-4, warmup=1_000, weight_decay=0.1),  # 400 epochs of 5,000
    "long": dict(steps=10_000, batch_size=16, lr=1e-3, warmup=500, weight_decay=0.1),
    "long16k": dict(steps=10_000, batch_size=4, lr=1e-3, warmup=500, weight_decay=0.1),
}


def _rng(name: str, seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _TAGS[name], stream]))


def induction_head(rng, n: int, vocab_size: int, seq_len: int):
    """``(inputs [n, seq_len + 1], answers [n])``; the answer is due at the last position."""
    trig = vocab_size - 2
    seq = rng.integers(0, vocab_size - 2, size=(n, seq_len + 1))
    pos = rng.integers(0, seq_len - 1, size=n)  # trigger at pos, answer at pos + 1 < seq_len
    rows = np.arange(n)
    seq[rows, pos] = trig
    seq[:, -1] = trig
    return seq, seq[rows, pos + 1]


def assoc_recall(rng, n: int, vocab_size: int, seq_len: int):
    """``(inputs [n, seq_len], answers [n])``: ``k v`` pairs, then ``=> q``."""
    K = (vocab_size - 2) // 2
    n_pairs = seq_len // 2 - 1
    values = K + rng.integers(0, K, size=(n, K))  # each sequence's key -> value map
    keys = rng.integers(0, K, size=(n, n_pairs))
    rows = np.arange(n)[:, None]
    seq = np.zeros((n, seq_len), dtype=np.int64)
    seq[:, 0 : 2 * n_pairs : 2] = keys
    seq[:, 1 : 2 * n_pairs : 2] = values[rows, keys]
    query = keys[np.arange(n), rng.integers(0, n_pairs, size=n)]  # a key present in the context
    seq[:, -2] = vocab_size - 2
    seq[:, -1] = query
    return seq, values[np.arange(n), query]


def selective_copy(rng, n: int, vocab_size: int, seq_len: int, n_copy: int):
    """``(inputs [n, seq_len + n_copy], data tokens [n, n_copy])``."""
    seq = np.zeros((n, seq_len + n_copy), dtype=np.int64)
    pos = np.sort(np.argsort(rng.random((n, seq_len)), axis=1)[:, :n_copy], axis=1)  # distinct positions
    data = rng.integers(1, vocab_size - 1, size=(n, n_copy))
    np.put_along_axis(seq, pos, data, axis=1)
    seq[:, seq_len:] = vocab_size - 1
    return seq, data


def _check(name: str, cfg: dict) -> None:
    for key in ("n_train", "n_val", "n_test"):
        if cfg[key] < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {cfg[key]}")
    minimum = {"induction_head": (4, 3), "assoc_recall": (4, 4), "selective_copy": (3, 1)}[name]
    if cfg["vocab_size"] < minimum[0]:
        raise ValueError(f"{name}: vocab_size must be >= {minimum[0]}, got {cfg['vocab_size']}")
    if cfg["seq_len"] < minimum[1]:
        raise ValueError(f"{name}: seq_len must be >= {minimum[1]}, got {cfg['seq_len']}")
    if name == "selective_copy" and not 1 <= cfg["n_copy"] <= cfg["seq_len"]:
        raise ValueError(f"selective_copy: n_copy must be in [1, seq_len], got {cfg['n_copy']}")


def _split(seq: np.ndarray, answers: np.ndarray) -> Split:
    """Inputs as given; targets IGNORE except the last ``answers.shape[1]`` positions."""
    answers = answers.reshape(len(seq), -1)
    targets = np.full(seq.shape, IGNORE, dtype=np.int64)
    targets[:, seq.shape[1] - answers.shape[1] :] = answers
    return Split(torch.from_numpy(np.ascontiguousarray(seq)), torch.from_numpy(targets))


def _build(name: str, preset: str, seed: int, overrides: dict) -> Task:
    cfg = resolve_preset(name, PRESETS[name], preset, overrides)
    _check(name, cfg)
    splits = {}
    for stream, split in enumerate(("train", "validation", "test")):
        n = cfg[{"train": "n_train", "validation": "n_val", "test": "n_test"}[split]]
        rng = _rng(name, seed, stream)
        if name == "selective_copy":
            seq, ans = selective_copy(rng, n, cfg["vocab_size"], cfg["seq_len"], cfg["n_copy"])
        else:
            seq, ans = globals()[name](rng, n, cfg["vocab_size"], cfg["seq_len"])
        splits[split] = _split(seq, ans)
    L = splits["train"].inputs.shape[1]
    meta = TaskMeta(
        name,
        "lm",
        cfg["vocab_size"],
        L,
        preset=preset,
        seed=seed,
        description={
            "induction_head": "induction head (H3): recall the token after the trigger",
            "assoc_recall": "associative recall (H3): the value of the queried key",
            "selective_copy": "selective copying (Mamba): copy the data tokens in order",
        }[name],
        extra={"config": cfg},
    )
    key = preset if preset in MODEL_DEFAULTS else "quick"
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(MODEL_DEFAULTS[key]),
        dict(TRAIN_DEFAULTS[key]),
    )


@register_task("induction_head")
def build_induction_head(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    """``build("induction_head", preset="quick"|"lra"|"long"|"long16k", seed=0, **settings)``."""
    return _build("induction_head", preset, seed, overrides)


@register_task("assoc_recall")
def build_assoc_recall(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    """``build("assoc_recall", preset="quick"|"lra"|"long"|"long16k", seed=0, **settings)``."""
    return _build("assoc_recall", preset, seed, overrides)


@register_task("selective_copy")
def build_selective_copy(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    """``build("selective_copy", preset="quick"|"lra"|"long"|"long16k", seed=0, **settings)``."""
    return _build("selective_copy", preset, seed, overrides)
