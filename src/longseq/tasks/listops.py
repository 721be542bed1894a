"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2021).

Spec (google-research/long-range-arena ``lra_benchmarks/data/listops.py``, re-implemented, not
copied): operators ``[MIN``, ``[MAX``, ``[MED`` (``int(np.median)``: the mean of the two middle
values rounded down when the count is even) and ``[SM`` (sum mod 10); values 0-9. The root has
depth 1; a node shallower than ``max_depth`` (10) is an operator with probability 0.25, otherwise a
digit; nodes at ``max_depth`` are digits. An operator has ``randint(2, max_args)`` (2..10)
arguments and a uniformly chosen operator. A tree's length counts digits, operators and ``]``
(= #digits + 2 #operators); trees are kept when ``min_length < length < max_length`` (strict, as in
LRA: 500 < length < 2000). The label is the value of the expression (10 classes).

Tokens (no parentheses; ``]`` is its own token, as in the fixed LRA input pipeline and S4's
``listops_tokenizer``): 0 = pad, 1..10 = digits 0..9, 11..14 = ``[MIN [MAX [MED [SM``, 15 = ``]``.
Inputs are right-padded to ``max_length - 1`` with a mask.

Decisions where LRA is not reproducible: the generator is seeded (numpy ``SeedSequence([seed,
tag])``); duplicates are removed in insertion order (a dict, not a Python ``set`` whose order
depends on the hash seed); train, validation and test are consecutive slices of the one
deduplicated stream, so no expression appears in two splits. The random draws differ from LRA's
(numpy instead of ``random``; trees are grown level by level), but the distribution over trees is
the same: each node's type, arity and operator are drawn independently as in the recursive
generator.

The generator is vectorised: many trees are grown at once, breadth first, one numpy pass per
depth; lengths, labels (bottom-up) and pre-order token positions (top-down) are computed per
level, and only trees passing the length filter are written out. Data is cached on disk
(:mod:`longseq.tasks.cache`) for all but tiny configurations (``cache=None``: auto; ``True``/``False``).

Presets:
* ``quick``: lengths 50 < L < 250 (padded to 249), 20,000 / 1,000 / 1,000 examples; a 2-layer
  softmax model (d_model 64, learned positions) trains in a few CPU minutes and beats the
  majority class (about 20%; uniform chance 10%) clearly.
* ``lra``: the published setting, lengths 500 < L < 2000 (padded to 1999), 96,000 / 2,000 / 2,000.
"""

from __future__ import annotations

import numpy as np

from .base import Task, TaskMeta, register_task, resolve_preset
from .cache import CompactSplit, cached, progress, source_fingerprint

PAD, DIGIT0, OP0, CLOSE = 0, 1, 11, 15
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VOCAB = ["<pad>"] + [str(d) for d in range(10)] + list(OPERATORS) + ["]"]
VOCAB_SIZE = len(VOCAB)  # 16
_TAG = 0x6C6F7073  # "lops": separates this task's random stream from others with one seed

PRESETS = {
    "quick": dict(
        n_train=20_000, n_val=1_000, n_test=1_000, min_length=50, max_length=250, max_depth=10, max_args=10, p_op=0.25
    ),
    "lra": dict(
        n_train=96_000, n_val=2_000, n_test=2_000, min_length=500, max_length=2000, max_depth=10, max_args=10, p_op=0.25
    ),
}
MODEL_DEFAULTS = {
    # Learned positions: without any, attention sees a bag of tokens and cannot parse the nesting
    # (measured: a 2-layer softmax model stayed at the majority class, 0.205 test after 1,500 steps;
    # with learned positions it reached 0.35 validation accuracy by step 500).
    "quick": dict(d_model=64, n_layers=2, num_heads=4, pooling="mean", position="learned"),
    "lra": dict(d_model=128, n_layers=6, num_heads=4, pooling="mean", position="learned"),
}
TRAIN_DEFAULTS = {
    "quick": dict(steps=1500, batch_size=32, lr=1e-3, warmup=100, weight_decay=0.05),
    # S4 Table 11: batch 100, 50 epochs (48k steps); lr 1e-3 suits attention-style mixers.
    "lra": dict(steps=48_000, batch_size=100, lr=1e-3, warmup=1_000, weight_decay=0.05),
}


def decode(ids) -> list[str]:
    """Token ids -> token strings (padding dropped)."""
    return [VOCAB[int(i)] for i in ids if int(i) != PAD]


def _grow(rng: np.random.Generator, n_trees: int, max_depth: int, max_args: int, p_op: float):
    """Grow ``n_trees`` random trees breadth first. Returns per-level lists of
    ``(parent index into the previous level, is_op, n_args, token)``; level 0 holds the roots and
    the children of a node are contiguous and ordered in the next level."""
    levels = []
    parent = np.arange(n_trees)  # the roots' "parent" is their tree id
    for depth in range(1, max_depth + 1):
        n = parent.shape[0]
        is_op = rng.random(n) < p_op if depth < max_depth else np.zeros(n, dtype=bool)
        n_args = np.where(is_op, rng.integers(2, max_args + 1, size=n), 0)
        token = np.where(is_op, OP0 + rng.integers(0, len(OPERATORS), size=n), DIGIT0 + rng.integers(0, 10, size=n))
        levels.append((parent, is_op, n_args, token))
        if not is_op.any():
            break
        parent = np.repeat(np.arange(n), n_args)
    return levels


def _group_starts(n_args: np.ndarray) -> np.ndarray:
    """Index of each node's first child in the next level (valid where ``n_args > 0``)."""
    return np.cumsum(n_args) - n_args


def _evaluate(levels) -> np.ndarray:
    """Bottom-up values of every node; returns the roots' values ``[n_trees]``."""
    values = None
    for parent, is_op, n_args, token in reversed(levels):
        v = np.where(is_op, 0, token - DIGIT0)
        if values is not None and is_op.any():
            ops = np.flatnonzero(is_op)
            starts = _group_starts(n_args)[ops]
            k = n_args[ops]
            kind = token[ops] - OP0
            vmin = np.minimum.reduceat(values, starts)
            vmax = np.maximum.reduceat(values, starts)
            vsum = np.add.reduceat(values, starts) % 10
            # median: sort the children of each parent (values are 0..9 so one sort key suffices)
            child_parent = np.repeat(np.arange(len(n_args)), n_args)
            srt = values[np.argsort(child_parent * 10 + values, kind="stable")]
            vmed = (srt[starts + (k - 1) // 2] + srt[starts + k // 2]) // 2
            v[ops] = np.choose(kind, [vmin, vmax, vmed, vsum])
        values = v
    return values


def _sizes(levels) -> list[np.ndarray]:
    """Token count of every node's subtree (digit 1; operator 2 + its children's)."""
    sizes, below = [], None
    for parent, is_op, n_args, token in reversed(levels):
        s = np.where(is_op, 2, 1).astype(np.int64)
        if below is not None:
            s += np.bincount(below[0], weights=below[1], minlength=len(s)).astype(np.int64)
        sizes.append(s)
        below = (parent, s)
    return sizes[::-1]


def _write_tokens(levels, sizes, keep: np.ndarray, width: int) -> np.ndarray:
    """Pre-order token rows ``[keep.sum(), width]`` (uint8, 0-padded) for the kept trees."""
    row_of_tree = np.cumsum(keep) - 1
    out = np.zeros((int(keep.sum()), width), dtype=np.uint8)
    pos, tree = None, None
    for d, ((parent, is_op, n_args, token), size) in enumerate(zip(levels, sizes)):
        if d == 0:
            pos, tree = np.zeros(len(parent), dtype=np.int64), parent
        else:
            first = _group_starts(levels[d - 1][2])[parent]  # index of the first sibling
            before = np.cumsum(size) - size  # sizes of all earlier nodes at this level
            pos = pos[parent] + 1 + before - before[first]  # after the operator token + earlier siblings
            tree = tree[parent]
        sel = keep[tree]
        rows, p = row_of_tree[tree[sel]], pos[sel]
        out[rows, p] = token[sel]
        ops = is_op[sel]
        out[rows[ops], p[ops] + size[sel][ops] - 1] = CLOSE
    return out


def generate(
    n: int,
    seed: int,
    *,
    min_length: int,
    max_length: int,
    max_depth: int = 10,
    max_args: int = 10,
    p_op: float = 0.25,
    batch_trees: int = 8192,
    show_progress: bool = True,
):
    """``n`` distinct expressions with ``min_length < length < max_length`` in generation order.
    Returns ``(tokens uint8 [n, max_length - 1], lengths int32 [n], labels int64 [n])``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG]))
    width = max_length - 1
    seen: dict[bytes, None] = {}
    rows, lens, labels = [], [], []
    bar = progress(total=n, desc="listops", unit="expr") if show_progress else None
    rounds = 0
    while len(seen) < n:
        levels = _grow(rng, min(batch_trees, 256 << rounds), max_depth, max_args, p_op)  # grow batches
        rounds += 1
        sizes = _sizes(levels)
        length = sizes[0]
        keep = (length > min_length) & (length < max_length)
        if not keep.any():
            continue
        tokens = _write_tokens(levels, sizes, keep, width)
        values = _evaluate(levels)[keep]
        for row, L, v in zip(tokens, length[keep], values):
            key = row[:L].tobytes()
            if key in seen:
                continue
            seen[key] = None
            rows.append(row)
            lens.append(L)
            labels.append(v)
            if len(seen) == n:
                break
        if bar is not None:
            bar.update(len(seen) - bar.n)
    if bar is not None:
        bar.close()
    return (
        np.stack(rows) if rows else np.zeros((0, width), np.uint8),
        np.asarray(lens, dtype=np.int32),
        np.asarray(labels, dtype=np.int64),
    )


def _check(cfg: dict) -> None:
    for key in ("n_train", "n_val", "n_test"):
        if cfg[key] < 0:
            raise ValueError(f"listops: {key} must be >= 0, got {cfg[key]}")
    if not 1 <= cfg["min_length"] < cfg["max_length"] - 1:
        raise ValueError(
            f"listops: need 1 <= min_length < max_length - 1, got {cfg['min_length']}, {cfg['max_length']}"
        )
    if cfg["max_depth"] < 2 or cfg["max_args"] < 2:
        raise ValueError("listops: max_depth and max_args must be >= 2")
    if not 0 < cfg["p_op"] < 1:
        raise ValueError(f"listops: p_op must be in (0, 1), got {cfg['p_op']}")


@register_task("listops")
def build_listops(preset: str = "quick", seed: int = 0, cache: bool | None = None, **overrides) -> Task:
    """``build("listops", preset="quick"|"lra", seed=0, cache=None, **settings)``; see the module
    docstring. ``cache=None`` caches on disk when the split holds more than 5,000 examples."""
    cfg = resolve_preset("listops", PRESETS, preset, overrides)
    _check(cfg)
    sizes = {"train": cfg["n_train"], "validation": cfg["n_val"], "test": cfg["n_test"]}
    total = sum(sizes.values())

    def build_arrays():
        tokens, lengths, labels = generate(
            total,
            seed,
            min_length=cfg["min_length"],
            max_length=cfg["max_length"],
            max_depth=cfg["max_depth"],
            max_args=cfg["max_args"],
            p_op=cfg["p_op"],
            show_progress=total > 5_000,
        )
        out, start = {}, 0
        for split, n in sizes.items():
            out[f"{split}_inputs"] = tokens[start : start + n]
            out[f"{split}_lengths"] = lengths[start : start + n]
            out[f"{split}_targets"] = labels[start : start + n]
            start += n
        return out

    use_cache = total > 5_000 if cache is None else bool(cache)
    arrays = cached("listops", preset, seed, cfg, build_arrays, source=source_fingerprint(__file__), enabled=use_cache)
    splits = {k: CompactSplit.from_arrays(arrays, k) for k in sizes}
    meta = TaskMeta(
        "listops",
        "classification",
        VOCAB_SIZE,
        cfg["max_length"] - 1,
        num_classes=10,
        preset=preset,
        seed=seed,
        pad_id=PAD,
        description="ListOps (LRA generator): evaluate a nested MIN/MAX/MED/SM expression",
        extra={"config": cfg, "vocab": VOCAB},
    )
    mkey = preset if preset in MODEL_DEFAULTS else "quick"
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(MODEL_DEFAULTS[mkey]),
        dict(TRAIN_DEFAULTS[mkey]),
    )
