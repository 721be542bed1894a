"""The five context-free-language LM tasks of DuSell & Chiang 2020 ("Learning Context-Free
Languages with Nondeterministic Stack RNNs", CoNLL, sec. 5), with the exact lower bound on
per-symbol cross-entropy: ``marked_reversal``, ``unmarked_reversal``, ``padded_reversal``,
``dyck``, ``hardest_cfl``.

Every string is drawn as in the paper's official code (github.com/bdusell/nondeterministic-stack-rnn,
``cfl_language_modeling/data_util.py`` and ``lib/formal_models/pcfg_length_sampling.py``): a length
``ℓ`` uniformly from the *valid* lengths in the split's range (lengths the grammar can derive),
then a string from the PCFG conditioned on having length ``ℓ``. So the true probability of a
string is

    p(w) = 1/|valid lengths| · p_G(w) / Σ_{|w'| = ℓ} p_G(w')                        (paper eq. in sec. 5.1)

and the lower bound on the model's per-symbol cross-entropy over a split is
``Σ_w −log p(w) / Σ_w (|w| + 1)`` (the ``+1`` is the end-of-string prediction, as
``lower_bound_perplexity.py`` counts it). ``p_G(w)`` is the sum over *all* derivations (the
inside probability: ``padded_reversal`` and ``hardest_cfl`` are ambiguous) and the denominator is
the length-``ℓ`` inside weight ``I[S, ℓ]``; both are computed here exactly in float64 on a
binarised copy of the grammar (see :class:`PCFG`).

Grammars and their parameters are the official code's (``grammars/*.py``, ``functions.bash``):

* ``marked_reversal``: ``S → a S a`` (p/k each, k = ``symbol_types`` = 2), ``S → #`` (1 − p), mean
  length of ``w`` 60 (``p = 60/61``). Language ``w # wᴿ``.
* ``unmarked_reversal``: the same with ``S → ε``: ``w wᴿ``.
* ``padded_reversal``: ``S → a S a`` (p/k), ``S → T_a`` ((1−p)/k), ``T_a → a T_a`` (g), ``T_a → ε``
  (1−g); mean content 60, mean padding 30: ``w aᵖ wᴿ``.
* ``dyck``: Dyck-2, ``S → S T`` (s), ``S → T`` (1−s), ``T → (_i S )_i`` (t), ``T → (_i )_i`` (1−t), each
  bracket type ``i``; the rules are normalised per left side as the official ``Grammar`` does;
  mean splits 1, mean nesting depth 40 (``t`` from mean depth − 1).
* ``hardest_cfl``: Greibach's hardest CFL as the official ``HardestCFLGrammar`` (decoys of
  commas, fillers and ``;``-separated alternatives around a Dyck-2 string over ``()[]``; symbols
  ``( ) [ ] , ; $``), mean commas 0.5, short filler 0.5, long filler 2, ``;`` probability 0.25,
  mean splits 1.5, mean nesting depth 3.

Lengths (``train_on_task.bash``, ``generate_test_set.bash``): train and validation 40-80, test
40-100 (lengths beyond the training range), 10,000 / 1,000 training / validation strings and 100
test strings per length (preset ``paper``). Preset ``quick`` keeps the lengths and cuts the
counts. Token ids: the ``k`` terminal symbols ``0..k-1``, then ``EOS = k`` and ``BOS = k + 1``;
inputs are ``BOS w`` and targets ``w EOS`` (the paper's model predicts the first symbol from its
initial state; a BOS input is the same thing for a causal model), right-padded (mask False,
target ``IGNORE``).

Each validation/test split is a :class:`CFLSplit` that carries ``nll`` (``−log p(w)`` per string,
nats), so the trainer reports ``lower_bound`` and ``ce_gap`` = cross-entropy − lower bound over
exactly the strings it evaluated (metric ``ce_gap``, nats/symbol, lower is better). The whole-split
bounds are also in ``meta.extra["lower_bound"]``.

Decision left open by the paper: per-string lengths (the official code draws one length per
*batch* and batches equal lengths; here each string draws its own length and batches are padded:
the distribution of strings is the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import IGNORE, Split, Task, TaskMeta, register_task, resolve_preset

NAMES = ("marked_reversal", "unmarked_reversal", "padded_reversal", "dyck", "hardest_cfl")
_TAGS = {n: 0x63666C00 + i for i, n in enumerate(NAMES)}


def mean_to_continue_prob(mean: float) -> float:
    """``X → a X (q) | ε (1 − q)`` gives |X| geometric with mean ``q / (1 − q)``: ``q = m / (m + 1)``."""
    return 1.0 - 1.0 / (mean + 1.0)


# ------------------------------------------------------------------------------------------- grammars
# A grammar is (start, [(lhs, rhs, weight), ...]): nonterminals are str, terminals int.


def marked_reversal_grammar(symbol_types: int = 2, mean_length: float = 60):
    p = mean_to_continue_prob(mean_length)
    rules = [("S", (a, "S", a), p / symbol_types) for a in range(symbol_types)]
    rules.append(("S", (symbol_types,), 1 - p))  # '#' = symbol_types
    return "S", rules


def unmarked_reversal_grammar(symbol_types: int = 2, mean_length: float = 60):
    p = mean_to_continue_prob(mean_length)
    rules = [("S", (a, "S", a), p / symbol_types) for a in range(symbol_types)]
    rules.append(("S", (), 1 - p))
    return "S", rules


def padded_reversal_grammar(symbol_types: int = 2, mean_content_length: float = 60, mean_padding_length: float = 30):
    p, g = mean_to_continue_prob(mean_content_length), mean_to_continue_prob(mean_padding_length)
    rules = []
    for a in range(symbol_types):
        rules += [
            ("S", (a, "S", a), p / symbol_types),
            ("S", (f"T{a}",), (1 - p) / symbol_types),
            (f"T{a}", (a, f"T{a}"), g),
            (f"T{a}", (), 1 - g),
        ]
    return "S", rules


def dyck_grammar(bracket_types: int = 2, mean_bracket_splits: float = 1, mean_nesting_depth: float = 40):
    if mean_nesting_depth <= 1:
        raise ValueError(f"dyck: mean_nesting_depth must be > 1, got {mean_nesting_depth}")
    s, t = mean_to_continue_prob(mean_bracket_splits), mean_to_continue_prob(mean_nesting_depth - 1)
    rules = [("S", ("S", "T"), s), ("S", ("T",), 1 - s)]
    for i in range(bracket_types):
        rules += [("T", (2 * i, "S", 2 * i + 1), t), ("T", (2 * i, 2 * i + 1), 1 - t)]
    return "S", rules


def hardest_cfl_grammar(
    mean_num_commas=0.5,
    mean_short_filler_length=0.5,
    mean_long_filler_length=2,
    semicolon_probability=0.25,
    mean_bracket_splits=1.5,
    mean_nesting_depth=3,
):
    """Greibach's hardest CFL as the official ``HardestCFLGrammar`` (symbols ``()[],;$`` = 0..6)."""
    lpar, rpar, lsq, rsq, comma, semi, dollar = range(7)
    c = mean_to_continue_prob(mean_num_commas)
    u = mean_to_continue_prob(mean_short_filler_length)
    v = mean_to_continue_prob(mean_long_filler_length - 1)
    q = semicolon_probability
    s = mean_to_continue_prob(mean_bracket_splits)
    t = mean_to_continue_prob(mean_nesting_depth)
    rules = [
        ("S'", ("R", dollar, "Q", "S", "L", semi), 1.0),
        ("L", ("L'", comma, "U"), 1.0),
        ("L'", (comma, "V", "L'"), c),
        ("L'", (), 1 - c),
        ("R", ("U", comma, "R'"), 1.0),
        ("R'", ("R'", "V", comma), c),
        ("R'", (), 1 - c),
        ("U", ("W", "U"), u),
        ("U", (), 1 - u),
        ("V", ("W", "V"), v),
        ("V", ("W",), 1 - v),
    ]
    rules += [("W", (a,), 1.0) for a in (lpar, rpar, lsq, rsq, dollar)]
    rules += [("Q", ("L", semi, "R"), q), ("Q", (), 1 - q), ("S", ("S", "Q", "T"), s), ("S", ("T",), 1 - s)]
    for lb, rb in ((lpar, rpar), (lsq, rsq)):
        rules += [("T", (lb, "Q", "S", "Q", rb), t / 2), ("T", (lb, "Q", rb), (1 - t) / 2)]
    return "S'", rules


# ---------------------------------------------------------------------------------------------- PCFG


class PCFG:
    """A PCFG with exact length-conditioned sampling and inside probabilities (float64).

    Rules are normalised per left-hand side, then binarised: each terminal ``a`` becomes a
    preterminal ``'a → a`` and ``A → X₁ … X_m`` (m > 2) a chain ``A → X₁ N₁, N₁ → X₂ N₂, …`` with
    weight 1 on the new rules, which keeps every derivation's probability. What remains has the
    shapes ``A → ε``, ``'a → a``, ``A → B`` and ``A → B C``.

    * ``e[X]`` = P(X ⇒* ε): the least fixed point of its polynomial system (iterated from 0).
    * Length inside ``I[X, ℓ]`` = P(X derives a string of length ℓ), ℓ ≥ 1: the terms in which one
      child takes all ℓ symbols (unary rules, binary rules with an empty sibling) are linear in
      ``I[·, ℓ]``: ``I_ℓ = b_ℓ + M I_ℓ``, solved as ``I_ℓ = (Id − M)⁻¹ b_ℓ`` with
      ``b_ℓ[A] = [ℓ = 1] Σ_{A→a} p + Σ_{A→BC} p Σ_{c=1}^{ℓ−1} I[B,c] I[C,ℓ−c]``.
    * String inside ``β[X, i, j]`` = P(X ⇒* w[i:j]) by the same split: span width by width,
      ``β_w = (Id − M)⁻¹ b_w`` with the proper splits in ``b_w``; vectorised over spans and strings.
    """

    def __init__(self, start: str, rules, num_terminals: int):
        self.num_terminals = num_terminals
        totals: dict[str, float] = {}
        for lhs, _, w in rules:
            totals[lhs] = totals.get(lhs, 0.0) + w
        nts = list(dict.fromkeys([start] + [lhs for lhs, _, _ in rules]))
        self.index = {x: i for i, x in enumerate(nts)}
        eps, unary, binary, term = [], [], [], []

        def nt(sym) -> int:
            if isinstance(sym, str):
                if sym not in totals:
                    raise ValueError(f"grammar: nonterminal {sym!r} has no rules")
                return self.index[sym]
            key = f"'{sym}"
            if key not in self.index:
                self.index[key] = len(self.index)
                term.append((self.index[key], int(sym)))
            return self.index[key]

        fresh = 0
        for lhs, rhs, w in rules:
            p, a = w / totals[lhs], self.index[lhs]
            syms = [nt(s) for s in rhs]
            while len(syms) > 2:  # binarise: A -> X1 N, N -> X2 ...
                self.index[f"@{fresh}"] = n = len(self.index)
                fresh += 1
                binary.append((a, syms[0], n, p))
                a, p, syms = n, 1.0, syms[1:]
            if not syms:
                eps.append((a, p))
            elif len(syms) == 1:
                unary.append((a, syms[0], p))
            else:
                binary.append((a, syms[0], syms[1], p))
        X = self.num_nt = len(self.index)
        self.start = self.index[start]
        self.eps, self.unary, self.binary, self.term = eps, unary, binary, term
        self.bin_a = np.array([r[0] for r in binary], dtype=np.int64)
        self.bin_b = np.array([r[1] for r in binary], dtype=np.int64)
        self.bin_c = np.array([r[2] for r in binary], dtype=np.int64)
        self.bin_p = np.array([r[3] for r in binary], dtype=np.float64)
        self.lhs_matrix = np.zeros((len(binary), X))  # [R, X]: rule r -> its left side
        self.lhs_matrix[np.arange(len(binary)), self.bin_a] = self.bin_p
        # e = P(X =>* eps): least fixed point
        e = np.zeros(X)
        for _ in range(100_000):
            new = np.zeros(X)
            for a, p in eps:
                new[a] += p
            for a, b, p in unary:
                new[a] += p * e[b]
            np.add.at(new, self.bin_a, self.bin_p * e[self.bin_b] * e[self.bin_c])
            if np.max(np.abs(new - e)) < 1e-17:
                e = new
                break
            e = new
        self.e = e
        M = np.zeros((X, X))
        for a, b, p in unary:
            M[a, b] += p
        np.add.at(M, (self.bin_a, self.bin_b), self.bin_p * e[self.bin_c])
        np.add.at(M, (self.bin_a, self.bin_c), self.bin_p * e[self.bin_b])
        self.Minv = np.linalg.inv(np.eye(X) - M)  # [X, X]
        self.term_vec = np.zeros((num_terminals, X))  # b_1 from one terminal
        for a, t in term:
            self.term_vec[t, a] += 1.0
        self.I = np.zeros((1, X))  # I[ℓ, X], grown on demand
        self.I[0] = e
        self._options: dict[tuple[int, int], tuple] = {}

    # -- length inside
    def length_inside(self, max_len: int) -> np.ndarray:
        """``I[ℓ, X]`` for ℓ = 0..max_len (float64)."""
        I = self.I
        for ell in range(len(I), max_len + 1):
            b = np.zeros(self.num_nt)
            if ell == 1:
                b += self.term_vec.sum(0)
            if len(self.bin_a):
                conv = (I[1:ell, self.bin_b] * I[ell - 1 : 0 : -1, self.bin_c]).sum(0)  # c = 1..ℓ-1
                np.add.at(b, self.bin_a, self.bin_p * conv)
            I = np.vstack([I, (self.Minv @ b)[None]])
        self.I = I
        return I[: max_len + 1]

    def valid_lengths(self, lo: int, hi: int) -> list[int]:
        I = self.length_inside(hi)
        return [ell for ell in range(lo, hi + 1) if I[ell, self.start] > 0]

    # -- sampling
    def _choices(self, x: int, ell: int):
        key = (x, ell)
        if key not in self._options:
            I = self.I
            opts, w = [], []
            if ell == 1:
                for a, t in self.term:
                    if a == x:
                        opts.append((0, t, 0, 0))
                        w.append(1.0)
            for a, b, p in self.unary:
                if a == x and I[ell, b] > 0:
                    opts.append((1, b, 0, 0))
                    w.append(p * I[ell, b])
            for a, b, c, p in self.binary:
                if a == x:
                    for k in range(ell + 1):
                        wk = p * I[k, b] * I[ell - k, c]
                        if wk > 0:
                            opts.append((2, b, c, k))
                            w.append(wk)
            cw = np.cumsum(w)
            self._options[key] = (opts, cw)
        return self._options[key]

    def sample(self, ell: int, rng: np.random.Generator) -> list[int]:
        """One string of length ``ell`` from ``p_G(· | length ell)``."""
        self.length_inside(ell)
        if self.I[ell, self.start] <= 0:
            raise ValueError(f"the grammar derives no string of length {ell}")
        out: list[int] = []
        stack = [(self.start, ell)]
        while stack:
            x, n = stack.pop()
            if n == 0:
                continue  # an empty yield: its derivation does not matter
            opts, cw = self._choices(x, n)
            kind, b, c, k = opts[int(np.searchsorted(cw, rng.random() * cw[-1], side="right").clip(max=len(cw) - 1))]
            if kind == 0:
                out.append(b)
            elif kind == 1:
                stack.append((b, n))
            else:
                stack.append((c, n - k))
                stack.append((b, k))
        return out

    # -- string inside
    def inside(self, strings: np.ndarray) -> np.ndarray:
        """``p_G(w)`` for equal-length strings ``[N, n]`` (int terminals) -> float64 ``[N]``."""
        strings = np.asarray(strings, dtype=np.int64)
        N, n = strings.shape
        X = self.num_nt
        T = np.zeros((n + 1, n + 1, N, X))  # T[i, w, string, X] = β[X, i, i + w]
        T[:, 0] = self.e
        Rr = len(self.bin_a)
        for w in range(1, n + 1):
            ns = n - w + 1
            if w == 1:
                b = self.term_vec[strings.T]  # [n, N, X]
            else:
                b = np.zeros((ns, N, X))
                if Rr:
                    m = np.arange(1, w)
                    ii = np.arange(ns)[:, None] + m[None, :]  # [ns, w-1]
                    left = T[:ns, 1:w][..., self.bin_b]  # [ns, w-1, N, R]
                    right = T[ii, w - m[None, :]][..., self.bin_c]  # [ns, w-1, N, R]
                    b = (left * right).sum(1) @ self.lhs_matrix  # [ns, N, X]
            T[:ns, w] = b @ self.Minv.T
        return T[0, n, :, self.start]


# ---------------------------------------------------------------------------------------------- task


@dataclass
class CFLSplit(Split):
    """A padded split whose strings carry their exact ``−log p(w)`` (nats, ``nll [N]``, float64)."""

    nll: torch.Tensor | None = None
    lengths: torch.Tensor | None = None

    def lower_bound(self) -> float:
        """Per-symbol cross-entropy lower bound over the split (``Σ nll / Σ (ℓ + 1)``)."""
        return float(self.nll.sum() / (self.lengths + 1).sum())


_PAPER = dict(
    train_lengths=(40, 80),
    val_lengths=(40, 80),
    test_lengths=(40, 100),
    n_train=10_000,
    n_val=1_000,
    n_test_per_length=100,
)
_QUICK = dict(
    train_lengths=(40, 80), val_lengths=(40, 80), test_lengths=(40, 100), n_train=2_000, n_val=200, n_test_per_length=5
)
_GRAMMAR_OPTS = {
    "marked_reversal": dict(symbol_types=2, mean_length=60),
    "unmarked_reversal": dict(symbol_types=2, mean_length=60),
    "padded_reversal": dict(symbol_types=2, mean_content_length=60, mean_padding_length=30),
    "dyck": dict(bracket_types=2, mean_bracket_splits=1, mean_nesting_depth=40),
    "hardest_cfl": dict(
        mean_num_commas=0.5,
        mean_short_filler_length=0.5,
        mean_long_filler_length=2,
        semicolon_probability=0.25,
        mean_bracket_splits=1.5,
        mean_nesting_depth=3,
    ),
}
PRESETS = {name: {"paper": {**_PAPER, **g}, "quick": {**_QUICK, **g}} for name, g in _GRAMMAR_OPTS.items()}
# The paper's model: one LSTM layer of 20 units; Adam, lr log-uniform in [5e-4, 1e-2], batch 10,
# gradient clipping 5 (train_on_task.bash). Here: a fixed lr and a step budget.
MODEL_DEFAULTS = dict(d_model=32, n_layers=1, num_heads=1, ffn="none", tie_embeddings=False)
TRAIN_DEFAULTS = {
    "quick": dict(
        steps=1_000,
        batch_size=10,
        lr=5e-3,
        warmup=0,
        weight_decay=0.0,
        grad_clip=5.0,
        eval_every=250,
        eval_batch_size=64,
    ),
    "paper": dict(
        steps=200_000,
        batch_size=10,
        lr=3e-3,
        warmup=0,
        weight_decay=0.0,
        grad_clip=5.0,
        eval_every=1_000,
        eval_batch_size=64,
    ),
}


def grammar(name: str, cfg: dict) -> PCFG:
    opts = {k: cfg[k] for k in _GRAMMAR_OPTS[name]}
    start, rules = globals()[f"{name}_grammar"](**opts)
    k = {
        "marked_reversal": opts.get("symbol_types", 2) + 1,
        "unmarked_reversal": opts.get("symbol_types", 2),
        "padded_reversal": opts.get("symbol_types", 2),
        "dyck": 2 * opts.get("bracket_types", 2),
        "hardest_cfl": 7,
    }[name]
    return PCFG(start, rules, k)


def _check(name: str, cfg: dict) -> None:
    for key in ("train_lengths", "val_lengths", "test_lengths"):
        v = cfg[key]
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and 0 <= int(v[0]) <= int(v[1])):
            raise ValueError(f"{name}: {key} must be [min, max] with 0 <= min <= max, got {v!r}")
        if int(v[1]) > 400:
            raise ValueError(f"{name}: {key} max {v[1]} is above 400 (inside probabilities underflow float64)")
    for key in ("n_train", "n_val", "n_test_per_length"):
        if int(cfg[key]) < 0:
            raise ValueError(f"{name}: {key} must be >= 0, got {cfg[key]}")
    for key in ("symbol_types", "bracket_types"):
        if key in cfg and int(cfg[key]) < 1:
            raise ValueError(f"{name}: {key} must be >= 1, got {cfg[key]}")


def sample_split(
    g: PCFG,
    lengths: list[int],
    rng: np.random.Generator,
    *,
    n: int | None = None,
    per_length: int | None = None,
    with_nll: bool = True,
) -> CFLSplit:
    """``n`` strings with lengths uniform over ``lengths``, or ``per_length`` strings of each length."""
    if per_length is not None:
        lens = np.repeat(np.asarray(lengths, dtype=np.int64), per_length)
    else:
        lens = np.asarray(lengths, dtype=np.int64)[rng.integers(0, len(lengths), size=n)]
    strings = [g.sample(int(ell), rng) for ell in lens]
    k = g.num_terminals
    eos, bos = k, k + 1
    L = int(lens.max(initial=0)) + 1
    inputs = np.full((len(lens), L), eos, dtype=np.int64)
    targets = np.full((len(lens), L), IGNORE, dtype=np.int64)
    mask = np.zeros((len(lens), L), dtype=bool)
    for r, s in enumerate(strings):
        ell = len(s)
        inputs[r, 0], inputs[r, 1 : ell + 1] = bos, s
        targets[r, :ell], targets[r, ell] = s, eos
        mask[r, : ell + 1] = True
    nll = None
    if with_nll:
        nll = np.zeros(len(lens))
        I = g.length_inside(int(lens.max(initial=0)))
        for ell in np.unique(lens):
            for rows in np.array_split(np.flatnonzero(lens == ell), max(1, (lens == ell).sum() // 16)):
                pw = g.inside(np.array([strings[r] for r in rows], dtype=np.int64).reshape(len(rows), ell))
                nll[rows] = -np.log(pw) + math.log(I[ell, g.start]) + math.log(len(lengths))
        nll = torch.from_numpy(nll)
    return CFLSplit(
        torch.from_numpy(inputs),
        torch.from_numpy(targets),
        torch.from_numpy(mask),
        nll=nll,
        lengths=torch.from_numpy(lens),
    )


def _build(name: str, preset: str, seed: int, overrides: dict) -> Task:
    cfg = resolve_preset(name, PRESETS[name], preset, overrides)
    _check(name, cfg)
    g = grammar(name, cfg)
    splits, bounds = {}, {}
    for stream, (split, key) in enumerate(
        (("train", "train_lengths"), ("validation", "val_lengths"), ("test", "test_lengths"))
    ):
        lo, hi = (int(v) for v in cfg[key])
        valid = g.valid_lengths(lo, hi)
        if not valid:
            raise ValueError(f"{name}: the grammar derives no string with length in [{lo}, {hi}] ({key})")
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAGS[name], stream]))
        if split == "test":
            s = sample_split(g, valid, rng, per_length=int(cfg["n_test_per_length"]))
        else:
            s = sample_split(
                g, valid, rng, n=int(cfg["n_train" if split == "train" else "n_val"]), with_nll=split != "train"
            )
        if len(s) == 0:
            raise ValueError(f"{name}: the {split} split is empty; raise its size setting")
        splits[split] = s
        if s.nll is not None:
            bounds[split] = s.lower_bound()
    k = g.num_terminals
    L = max(s.inputs.shape[1] for s in splits.values())
    meta = TaskMeta(
        name,
        "lm",
        k + 2,
        L,
        metric="ce_gap",
        preset=preset,
        seed=seed,
        pad_id=k,
        description=f"DuSell & Chiang 2020 CFL language modelling: {name.replace('_', ' ')} "
        "(metric: cross-entropy minus the exact lower bound, nats/symbol)",
        extra={"config": cfg, "lower_bound": bounds, "eos_id": k, "bos_id": k + 1, "symbols": k},
    )
    key = preset if preset in TRAIN_DEFAULTS else "quick"
    return Task(
        meta, splits["train"], splits["validation"], splits["test"], dict(MODEL_DEFAULTS), dict(TRAIN_DEFAULTS[key])
    )


def _make(name: str):
    def build(preset: str = "quick", seed: int = 0, **overrides) -> Task:
        return _build(name, preset, seed, overrides)

    build.__name__ = f"build_{name}"
    build.__doc__ = f"``build({name!r}, preset='quick'|'paper', seed=0, **settings)``: see :mod:`longseq.tasks.cfl`."
    return register_task(name)(build)


for _name in NAMES:
    _make(_name)
