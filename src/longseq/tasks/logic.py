"""``logic_inference``: propositional-logic entailment (Bowman, Manning & Potts 2015, "Tree-structured
composition in neural networks without tree-structured architectures"), the systematic
generalisation test of ON-LSTM (Shen et al. 2019, sec. 5.3).

Expressions over six variables ``a … f`` with ``not``, ``and``, ``or``, fully bracketed as in
Bowman's data (``( a and ( not b ) )``). A pair ``(x, y)`` is labelled with one of the seven
relations of MacCartney & Manning, computed exactly from truth tables over the 2⁶ = 64 worlds
(``S(x)`` = the worlds where ``x`` holds):

    0 ``≡`` S(x) = S(y)             1 ``⊏`` S(x) ⊂ S(y)            2 ``⊐`` S(x) ⊃ S(y)
    3 ``^`` disjoint and exhaustive  4 ``|`` disjoint, not exhaustive  5 ``‿`` exhaustive, not disjoint
    6 ``#`` independence (none of the above)

Split (ON-LSTM sec. 5.3, following Bowman et al.): train and validation pairs have at most
``train_max_ops`` (6) operators, the test split has ``n_test_per_ops`` pairs for every count
1 … ``test_max_ops`` (12), so accuracy can be read by number of operators (``test.n_ops``).

Decisions (the papers do not pin them down): the operator count of a pair is that of its longer
expression (the other one draws a count uniformly in [0, n]); an expression with ``n`` operators
is ``not`` (probability 1/3) over one with ``n − 1``, or ``and``/``or`` over two whose counts
split ``n − 1`` uniformly; pairs with a tautology or a contradiction on either side are redrawn
(their relation is ambiguous between ``≡``/``^`` and the others). Overlap between splits is not
removed (rare beyond 3 operators). Batches are pairs ``[B, 2, L]`` (``meta.extra["pair"]``):
the two expressions are encoded separately, as in the papers' sentence-encoder setting.
Token ids: 0 pad, 1-6 variables, 7 ``not``, 8 ``and``, 9 ``or``, 10 ``(``, 11 ``)``.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Split, Task, TaskMeta, register_task, resolve_preset

RELATIONS = (
    "equivalence",
    "forward_entailment",
    "reverse_entailment",
    "negation",
    "alternation",
    "cover",
    "independence",
)
VARS = 6
NOT, AND, OR, LP, RP = 7, 8, 9, 10, 11
VOCAB = 12
ALL = (1 << (1 << VARS)) - 1
# truth table of variable v: bit w is set when variable v is true in world w
_VAR_MASK = [sum(1 << w for w in range(1 << VARS) if (w >> v) & 1) for v in range(VARS)]

PRESETS = {
    "quick": dict(n_train=10_000, n_val=500, n_test_per_ops=100, train_max_ops=6, test_max_ops=12),
    "paper": dict(n_train=100_000, n_val=2_000, n_test_per_ops=500, train_max_ops=6, test_max_ops=12),
}
MODEL_DEFAULTS = dict(d_model=64, n_layers=2, num_heads=2)
TRAIN_DEFAULTS = {
    "quick": dict(steps=2_000, batch_size=64, lr=2e-3, warmup=100, weight_decay=0.01, eval_every=500),
    "paper": dict(steps=20_000, batch_size=128, lr=1e-3, warmup=500, weight_decay=0.01, eval_every=1_000),
}


def relation(sx: int, sy: int) -> int:
    """The relation index (``RELATIONS``) of two truth tables (64-bit sets of worlds)."""
    if sx == sy:
        return 0
    if sx & sy == sx:
        return 1
    if sx & sy == sy:
        return 2
    disjoint, exhaustive = (sx & sy) == 0, (sx | sy) == ALL
    if disjoint and exhaustive:
        return 3
    if disjoint:
        return 4
    if exhaustive:
        return 5
    return 6


def expression(rng: np.random.Generator, n: int) -> tuple[list[int], int]:
    """A random expression with exactly ``n`` operators: ``(tokens, truth table)``."""
    if n == 0:
        v = int(rng.integers(VARS))
        return [1 + v], _VAR_MASK[v]
    if rng.random() < 1 / 3:
        toks, m = expression(rng, n - 1)
        return [LP, NOT] + toks + [RP], ALL & ~m
    k = int(rng.integers(n))
    lt, lm = expression(rng, k)
    rt, rm = expression(rng, n - 1 - k)
    if rng.random() < 0.5:
        return [LP] + lt + [AND] + rt + [RP], lm & rm
    return [LP] + lt + [OR] + rt + [RP], lm | rm


def evaluate(tokens: list[int], world: int) -> bool:
    """Truth value of a bracketed token sequence in one world (a reference evaluator for tests)."""
    pos = 0

    def parse() -> bool:
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if 1 <= t <= VARS:
            return bool((world >> (t - 1)) & 1)
        assert t == LP
        if tokens[pos] == NOT:
            pos += 1
            val = not parse()
        else:
            left = parse()
            op = tokens[pos]
            pos += 1
            right = parse()
            val = (left and right) if op == AND else (left or right)
        assert tokens[pos] == RP
        pos += 1
        return val

    return parse()


def sample_pairs(rng: np.random.Generator, counts: np.ndarray):
    """One pair per entry of ``counts`` (operators of the longer side): tokens, labels."""
    xs, ys, labels = [], [], []
    for n in counts:
        while True:
            tx, mx = expression(rng, int(n))
            ty, my = expression(rng, int(rng.integers(0, int(n) + 1)))
            if mx not in (0, ALL) and my not in (0, ALL):
                break
        if rng.random() < 0.5:
            tx, ty, mx, my = ty, tx, my, mx
        xs.append(tx)
        ys.append(ty)
        labels.append(relation(mx, my))
    return xs, ys, np.asarray(labels, dtype=np.int64)


def _split(xs, ys, labels, L: int, n_ops: np.ndarray) -> Split:
    N = len(xs)
    inputs = np.zeros((N, 2, L), dtype=np.int64)
    mask = np.zeros((N, 2, L), dtype=bool)
    for r, (a, b) in enumerate(zip(xs, ys)):
        inputs[r, 0, : len(a)], inputs[r, 1, : len(b)] = a, b
        mask[r, 0, : len(a)], mask[r, 1, : len(b)] = True, True
    s = Split(torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(mask))
    s.n_ops = torch.from_numpy(np.asarray(n_ops, dtype=np.int64))
    return s


@register_task("logic_inference")
def build_logic_inference(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    """``build("logic_inference", preset="quick"|"paper", seed=0, **settings)``: see :mod:`longseq.tasks.logic`."""
    cfg = resolve_preset("logic_inference", PRESETS, preset, overrides)
    for k in ("n_train", "n_val", "n_test_per_ops"):
        if int(cfg[k]) < 1:
            raise ValueError(f"logic_inference: {k} must be >= 1, got {cfg[k]}")
    if not 1 <= int(cfg["train_max_ops"]) <= int(cfg["test_max_ops"]) <= 30:
        raise ValueError(
            "logic_inference: need 1 <= train_max_ops <= test_max_ops <= 30, got "
            f"{cfg['train_max_ops']}, {cfg['test_max_ops']}"
        )
    tag = 0x6C6F6769
    raw = {}
    for stream, split in enumerate(("train", "validation", "test")):
        rng = np.random.default_rng(np.random.SeedSequence([seed, tag, stream]))
        if split == "test":
            counts = np.repeat(np.arange(1, int(cfg["test_max_ops"]) + 1), int(cfg["n_test_per_ops"]))
        else:
            n = int(cfg["n_train"] if split == "train" else cfg["n_val"])
            counts = rng.integers(1, int(cfg["train_max_ops"]) + 1, size=n)
        raw[split] = (*sample_pairs(rng, counts), counts)
    L = max(len(t) for xs, ys, _, _ in raw.values() for t in xs + ys)
    splits = {k: _split(xs, ys, lab, L, c) for k, (xs, ys, lab, c) in raw.items()}
    meta = TaskMeta(
        "logic_inference",
        "classification",
        VOCAB,
        L,
        num_classes=len(RELATIONS),
        preset=preset,
        seed=seed,
        description="propositional logic inference (Bowman et al. 2015): 7 relations; "
        f"train <= {cfg['train_max_ops']} operators, test 1..{cfg['test_max_ops']}",
        extra={"config": cfg, "pair": True, "relations": list(RELATIONS)},
    )
    key = preset if preset in TRAIN_DEFAULTS else "quick"
    return Task(
        meta, splits["train"], splits["validation"], splits["test"], dict(MODEL_DEFAULTS), dict(TRAIN_DEFAULTS[key])
    )
