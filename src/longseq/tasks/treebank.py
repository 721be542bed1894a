"""Synthetic treebanks for unsupervised parsing: ``pcfg_synth`` and ``lcfrs_synth`` (kind "parsing").

Real treebanks (PTB for Kim et al. 2019; NEGRA/TIGER/LASSY for Yang, Levy & Kim 2023) are not
available offline, so sentences are sampled from small, fixed, English-like grammars shipped in
this file, with their gold trees.

``pcfg_synth`` grammar (CNF; probabilities in :data:`PCFG_RULES`): S -> NP VP | NP Vi;
NP -> Det N | Det Nbar | NP PP | NP RC; Nbar -> Adj N | Adj Nbar; VP -> Vt NP | Vi Adv | Vi PP |
VP PP | Vs SBAR; PP -> P NP; RC -> Rel VP | Rel Vi; SBAR -> Comp S. Words (:data:`LEXICON`, 83
types) belong to one preterminal each and are drawn with Zipf weights 1/(rank+1) within it.
Ambiguity comes from attachment (a PP after an object NP attaches to the NP or the VP; relative
clauses stack), so the true grammar's own Viterbi parse (the *oracle*) is below 100% F1.

``lcfrs_synth`` adds two discontinuous constructions of English (the rule shapes are the
LCFRS-2 ones of Yang, Levy & Kim 2023 kept by :mod:`longseq.structured.lcfrs`):
* verb-particle: VP(x y z) -> VPRT(x, z) NP(y) with VPRT(x, z) -> Vp(x) Prt(z) ("picked the book
  up": the constituent {picked, up} is discontinuous);
* relative-clause extraposition: S(x y z) -> NPX(x, z) VP(y) with NPX(x, z) -> NP(x) RC(z)
  ("a man arrived who sang": {a man ... who sang} is discontinuous).

Sampling: top-down with Python's ``random.Random`` seeded from numpy ``SeedSequence([seed, tag])``,
words drawn per preterminal; a sentence is kept when ``min_length <= n <=
max_length`` (rejection: conditioning on length leaves p(tree | sentence) unchanged, so the
oracle parse is still the true grammar's). Gold constituents are ``longseq.trees`` tuples,
including single words and the root; metric: unlabeled sentence-level F1 with trivial spans
dropped (``longseq.trees.corpus_f1``), and perplexity (per word, from a model's log-likelihood).

Batches (kind ``"parsing"``): ``inputs`` int64 ``[B, L]`` word ids (0 = pad), ``mask``, ``lengths``
``[B]``, ``targets`` the next word (as kind ``lm``; ``IGNORE`` at the last word and padding).
Mixer models are not trained on these tasks (the arena skips them, ``build_model`` refuses them):
structured models score them (``scripts/train_structured.py``).
Gold trees: ``split.trees(index)`` -> list of constituent lists. ``meta.extra["baselines"]``: per
split, F1 of right-branching, left-branching and (pcfg_synth) the oracle Viterbi parse; for
lcfrs_synth also the best F1 any continuous (context-free) parser could reach (all gold continuous
spans, no discontinuous ones).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random

import numpy as np
import torch

from .. import trees as T
from .base import IGNORE, Task, TaskMeta, register_task, resolve_preset
from .cache import CompactSplit, cached, source_fingerprint

PAD = 0

LEXICON: dict[str, list[str]] = {
    "Det": ["the", "a", "every", "some", "this"],
    "N": [
        "dog",
        "cat",
        "man",
        "woman",
        "child",
        "teacher",
        "book",
        "house",
        "garden",
        "river",
        "city",
        "car",
        "letter",
        "song",
        "friend",
        "doctor",
        "bird",
        "table",
        "window",
        "story",
    ],
    "Adj": ["old", "small", "happy", "red", "quiet", "tall", "young", "strange", "bright", "lazy"],
    "Vt": [
        "saw",
        "liked",
        "found",
        "chased",
        "visited",
        "wrote",
        "read",
        "helped",
        "met",
        "watched",
        "carried",
        "followed",
    ],
    "Vi": ["slept", "laughed", "arrived", "left", "sang", "smiled", "waited", "ran", "danced", "fell"],
    "Vs": ["thinks", "says", "knows", "believes", "hopes"],
    "P": ["in", "on", "near", "with", "under", "behind", "from", "about"],
    "Rel": ["who", "which"],
    "Comp": ["that"],
    "Adv": ["quickly", "slowly", "today", "again", "loudly", "quietly", "there", "often"],
    # lcfrs_synth only
    "Vp": ["picked", "gave", "looked", "called", "threw", "turned"],
    "Prt": ["up", "back", "over", "away"],
}

# (parent, left, right, prob); "d:" marks a discontinuous (two-block) nonterminal, and the rule
# kind says how blocks combine: "cc" A(xy) <- B(x) C(y); "fill" A(xyz) <- D(x,z) C(y);
# "split" D(x, y) <- B(x) C(y).
PCFG_RULES = [
    ("S", "NP", "VP", 0.85, "cc"),
    ("S", "NP", "Vi", 0.15, "cc"),
    ("NP", "Det", "N", 0.55, "cc"),
    ("NP", "Det", "Nbar", 0.15, "cc"),
    ("NP", "NP", "PP", 0.15, "cc"),
    ("NP", "NP", "RC", 0.15, "cc"),
    ("Nbar", "Adj", "N", 0.8, "cc"),
    ("Nbar", "Adj", "Nbar", 0.2, "cc"),
    ("VP", "Vt", "NP", 0.5, "cc"),
    ("VP", "Vi", "Adv", 0.15, "cc"),
    ("VP", "Vi", "PP", 0.1, "cc"),
    ("VP", "VP", "PP", 0.15, "cc"),
    ("VP", "Vs", "SBAR", 0.1, "cc"),
    ("PP", "P", "NP", 1.0, "cc"),
    ("RC", "Rel", "VP", 0.8, "cc"),
    ("RC", "Rel", "Vi", 0.2, "cc"),
    ("SBAR", "Comp", "S", 1.0, "cc"),
]
LCFRS_RULES = [
    ("S", "NP", "VP", 0.7, "cc"),
    ("S", "NP", "Vi", 0.1, "cc"),
    ("S", "d:NPX", "Vi", 0.1, "fill"),
    ("S", "d:NPX", "VP", 0.1, "fill"),
    ("d:NPX", "NP", "RC", 1.0, "split"),
    ("NP", "Det", "N", 0.6, "cc"),
    ("NP", "Det", "Nbar", 0.15, "cc"),
    ("NP", "NP", "PP", 0.15, "cc"),
    ("NP", "NP", "RC", 0.1, "cc"),
    ("Nbar", "Adj", "N", 0.8, "cc"),
    ("Nbar", "Adj", "Nbar", 0.2, "cc"),
    ("VP", "Vt", "NP", 0.4, "cc"),
    ("VP", "Vi", "Adv", 0.1, "cc"),
    ("VP", "Vi", "PP", 0.1, "cc"),
    ("VP", "VP", "PP", 0.1, "cc"),
    ("VP", "d:VPRT", "NP", 0.3, "fill"),
    ("d:VPRT", "Vp", "Prt", 1.0, "split"),
    ("PP", "P", "NP", 1.0, "cc"),
    ("RC", "Rel", "VP", 0.6, "cc"),
    ("RC", "Rel", "Vi", 0.4, "cc"),
]
GRAMMARS = {"pcfg_synth": PCFG_RULES, "lcfrs_synth": LCFRS_RULES}
PRETERMINALS = {
    "pcfg_synth": ["Det", "N", "Adj", "Vt", "Vi", "Vs", "P", "Rel", "Comp", "Adv"],
    "lcfrs_synth": ["Det", "N", "Adj", "Vt", "Vi", "P", "Rel", "Adv", "Vp", "Prt"],
}
_TAGS = {"pcfg_synth": 0x70636667, "lcfrs_synth": 0x6C636672}

PRESETS = {
    "quick": dict(n_train=4000, n_val=300, n_test=300, min_length=3, max_length=20),
    "long": dict(n_train=20000, n_val=1000, n_test=1000, min_length=3, max_length=40),
}
LCFRS_PRESETS = {
    "quick": dict(n_train=3000, n_val=200, n_test=200, min_length=3, max_length=12),
    "long": dict(n_train=10000, n_val=500, n_test=500, min_length=3, max_length=20),
}


def vocabulary(name: str) -> list[str]:
    """``["<pad>", word, ...]`` in preterminal order; ids index this list."""
    return ["<pad>"] + [w for tag in PRETERMINALS[name] for w in LEXICON[tag]]


def word_tags(name: str) -> dict[str, str]:
    return {w: tag for tag in PRETERMINALS[name] for w in LEXICON[tag]}


class _TooLong(Exception):
    pass


def _tables(rules):
    """Cumulative weights for sampling: {parent: (cum, rules)} and {tag: cum over its words}."""
    by_parent: dict[str, list] = {}
    for r in rules:
        by_parent.setdefault(r[0], []).append(r)
    rule_cum = {a: (list(itertools.accumulate(r[3] for r in rs)), rs) for a, rs in by_parent.items()}
    word_cum = {t: list(itertools.accumulate(1.0 / k for k in range(1, len(ws) + 1))) for t, ws in LEXICON.items()}
    return rule_cum, word_cum


def _sample(rng: random.Random, tables, max_length: int):
    """One sentence: (words, root block of leaf ids, constituents as leaf-id sets, root last).
    Raises _TooLong past max_length."""
    rule_cum, word_cum = tables
    words: list[str] = []
    cons: list[frozenset] = []

    def pick(cum):
        return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)

    def gen(sym):
        """Returns a list of blocks, each a list of leaf ids."""
        if sym not in rule_cum:  # preterminal: a Zipf-weighted word
            if len(words) >= max_length:
                raise _TooLong
            words.append(LEXICON[sym][pick(word_cum[sym])])
            return [[len(words) - 1]]
        cum, opts = rule_cum[sym]
        _, left, right, _, kind = opts[pick(cum)]
        a, b = gen(left), gen(right)
        if kind == "cc":
            blocks = [a[0] + b[0]]
        elif kind == "split":
            blocks = [a[0], b[0]]
        else:  # fill: D(x, z) + C(y) -> x y z
            blocks = [a[0] + b[0] + a[1]]
        cons.append(frozenset(x for blk in blocks for x in blk))
        return blocks

    root = gen("S")[0]
    return words, root, cons


def _to_constituents(root: list[int], cons: list[frozenset]) -> list[T.Constituent]:
    """Leaf-id sets -> ``longseq.trees`` constituents over sentence positions, root first, words last."""
    pos = {leaf: i for i, leaf in enumerate(root)}
    out = []
    for c in reversed(cons):  # the root was appended last
        p = sorted(pos[x] for x in c)
        blocks, start = [], p[0]
        for a, b in zip(p, p[1:]):
            if b != a + 1:
                blocks.append((start, a + 1))
                start = b
        blocks.append((start, p[-1] + 1))
        out.append(T.normalize(blocks))
    return out + [((i, i + 1),) for i in range(len(root))]


def generate(name: str, n: int, seed: int, min_length: int, max_length: int):
    """``n`` sentences: (ids int32 [n, max_length], lengths int32 [n], spans int32 [m, 5] rows
    (sentence, i, j, k, l) with k = l = -1 for a continuous constituent)."""
    rng = random.Random(int(np.random.SeedSequence([seed, _TAGS[name]]).generate_state(1)[0]))
    tables = _tables(GRAMMARS[name])
    vocab = {w: i for i, w in enumerate(vocabulary(name))}
    ids = np.zeros((n, max_length), np.int32)
    lengths = np.zeros(n, np.int32)
    spans = []
    s = 0
    while s < n:
        try:
            words, root, cons = _sample(rng, tables, max_length)
        except _TooLong:
            continue
        if len(words) < min_length:
            continue
        sent = [words[x] for x in root]
        ids[s, : len(sent)] = [vocab[w] for w in sent]
        lengths[s] = len(sent)
        for c in _to_constituents(root, cons):
            (i, j), (k, l) = c[0], (c[1] if len(c) > 1 else (-1, -1))
            spans.append((s, i, j, k, l))
        s += 1
    return ids, lengths, np.asarray(spans, np.int32).reshape(-1, 5)


class ParsingSplit(CompactSplit):
    """A split of sentences with gold constituency trees (kind ``"parsing"``)."""

    def __init__(self, inputs, targets, lengths, spans: np.ndarray):
        super().__init__(inputs, targets, lengths)
        self.spans = np.asarray(spans)
        order = np.argsort(self.spans[:, 0], kind="stable")
        self._spans = self.spans[order]
        self._start = np.searchsorted(self._spans[:, 0], np.arange(len(inputs) + 1))

    def batch(self, index) -> dict[str, torch.Tensor]:
        out = super().batch(index)
        out["lengths"] = self.lengths[torch.as_tensor(index, dtype=torch.long).cpu()].long()
        return out

    def trees(self, index=None) -> list[list[T.Constituent]]:
        """Gold constituents (root first, single words included) of the given sentences."""
        idx = range(len(self)) if index is None else [int(i) for i in torch.as_tensor(index).reshape(-1)]
        out = []
        for s in idx:
            rows = self._spans[self._start[s] : self._start[s + 1]]
            out.append(
                [((int(i), int(j)),) if k < 0 else ((int(i), int(j)), (int(k), int(l))) for _, i, j, k, l in rows]
            )
        return out


# -- the oracle: Viterbi CKY of the true (context-free) grammar --------------------------------
def _cfg_tables(name: str):
    rules = GRAMMARS[name]
    tags = PRETERMINALS[name]
    nts = sorted({r[0] for r in rules}, key=lambda s: (s != "S", s))
    syms = nts + tags
    idx = {s: i for i, s in enumerate(syms)}
    binary = np.array([(idx[a], idx[b], idx[c]) for a, b, c, _, _ in rules], np.int64)
    logp = np.log(np.array([r[3] for r in rules]))
    vocab = vocabulary(name)
    emit = np.full((len(syms), len(vocab)), -np.inf)
    for tag in tags:
        k = len(LEXICON[tag])
        p = 1.0 / np.arange(1, k + 1)
        for w, q in zip(LEXICON[tag], p / p.sum()):
            emit[idx[tag], vocab.index(w)] = math.log(q)
    return binary, logp, emit, len(syms)


def viterbi_cfg(ids: np.ndarray, n: int, tables) -> list[T.Constituent]:
    """Most probable tree of the context-free grammar ``tables`` (from :func:`_cfg_tables`) for
    ``ids[:n]``; constituents root first. The root must be S (symbol 0)."""
    binary, logp, emit, nsym = tables
    best = np.full((n + 1, n + 1, nsym), -np.inf)
    back = {}
    for i in range(n):
        best[i, i + 1] = emit[:, ids[i]]
    A, Bc, Cc = binary[:, 0], binary[:, 1], binary[:, 2]
    for w in range(2, n + 1):
        for i in range(n - w + 1):
            j = i + w
            ks = np.arange(i + 1, j)
            cand = logp[None, :] + best[i, ks][:, Bc] + best[ks, j][:, Cc]  # [splits, rules]
            flat = cand.argmax(0)
            score = cand[flat, np.arange(len(logp))]
            for r in np.argsort(-score):
                if score[r] == -np.inf:
                    break
                if score[r] > best[i, j, A[r]]:
                    best[i, j, A[r]] = score[r]
                    back[(i, j, A[r])] = (int(ks[flat[r]]), int(Bc[r]), int(Cc[r]))
    if best[0, n, 0] == -np.inf:
        return T.right_branching(n)
    out = []

    def walk(i, j, a):
        out.append(((i, j),))
        if j - i > 1:
            k, b, c = back[(i, j, a)]
            walk(i, k, b)
            walk(k, j, c)

    walk(0, n, 0)
    return out


def _baselines(name: str, split: ParsingSplit) -> dict:
    n = [int(x) for x in split.lengths]
    gold = split.trees()
    out = {
        "right_branching": T.corpus_f1([T.right_branching(m) for m in n], gold, n)["sentence_f1"],
        "left_branching": T.corpus_f1([T.left_branching(m) for m in n], gold, n)["sentence_f1"],
    }
    if name == "pcfg_synth":
        tables = _cfg_tables(name)
        ids = split.inputs.numpy()
        pred = [viterbi_cfg(ids[s], m, tables) for s, m in enumerate(n)]
        out["oracle_viterbi"] = T.corpus_f1(pred, gold, n)["sentence_f1"]
    else:
        cont = [[c for c in g if len(T.normalize(c)) == 1] for g in gold]
        out["best_continuous"] = T.corpus_f1(cont, gold, n)["sentence_f1"]
        out["discontinuous_fraction"] = float(np.mean([any(len(c) > 1 for c in g) for g in gold]))
    return {k: round(float(v), 4) for k, v in out.items()}


def _build(name: str, presets: dict, preset: str, seed: int, cache, overrides) -> Task:
    cfg = resolve_preset(name, presets, preset, overrides)
    for key in ("n_train", "n_val", "n_test"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"{name}: {key} must be a positive int, got {cfg[key]!r}")
    if not 2 <= cfg["min_length"] <= cfg["max_length"] <= 60:
        raise ValueError(
            f"{name}: need 2 <= min_length <= max_length <= 60, got {cfg['min_length']}, {cfg['max_length']}"
        )
    sizes = {"train": cfg["n_train"], "validation": cfg["n_val"], "test": cfg["n_test"]}

    def build_arrays():
        ids, lengths, spans = generate(name, sum(sizes.values()), seed, cfg["min_length"], cfg["max_length"])
        out, start = {}, 0
        for split, m in sizes.items():
            sel = (spans[:, 0] >= start) & (spans[:, 0] < start + m)
            out[f"{split}_inputs"] = ids[start : start + m]
            out[f"{split}_lengths"] = lengths[start : start + m]
            out[f"{split}_spans"] = spans[sel] - np.array([start, 0, 0, 0, 0], np.int32)
            start += m
        return out

    use_cache = sum(sizes.values()) > 5_000 if cache is None else bool(cache)
    arrays = cached(name, preset, seed, cfg, build_arrays, source=source_fingerprint(__file__), enabled=use_cache)
    splits = {}
    for split in sizes:
        inputs = torch.from_numpy(np.asarray(arrays[f"{split}_inputs"], np.int64))
        lengths = torch.from_numpy(np.asarray(arrays[f"{split}_lengths"], np.int64))
        nxt = torch.cat([inputs[:, 1:], torch.zeros_like(inputs[:, :1])], 1)
        targets = nxt.masked_fill(torch.arange(inputs.shape[1])[None, :] >= lengths[:, None] - 1, IGNORE)
        splits[split] = ParsingSplit(inputs, targets, lengths, np.asarray(arrays[f"{split}_spans"]))
    vocab = vocabulary(name)
    baselines = {s: _baselines(name, splits[s]) for s in ("validation", "test")}
    desc = (
        "sentences of a fixed English-like PCFG with gold binary trees (unsupervised parsing)"
        if name == "pcfg_synth"
        else "sentences of a fixed LCFRS-2 grammar (verb-particle, extraposition) with gold discontinuous trees"
    )
    meta = TaskMeta(
        name,
        "parsing",
        len(vocab),
        cfg["max_length"],
        metric="sentence_f1",
        preset=preset,
        seed=seed,
        pad_id=PAD,
        description=desc,
        extra={"config": cfg, "vocab": vocab, "baselines": baselines},
    )
    return Task(meta, splits["train"], splits["validation"], splits["test"], {}, {})


@register_task("pcfg_synth")
def build_pcfg_synth(preset: str = "quick", seed: int = 0, cache: bool | None = None, **overrides) -> Task:
    """``build("pcfg_synth", preset="quick"|"long", seed=0, **settings)``; see the module docstring."""
    return _build("pcfg_synth", PRESETS, preset, seed, cache, overrides)


@register_task("lcfrs_synth")
def build_lcfrs_synth(preset: str = "quick", seed: int = 0, cache: bool | None = None, **overrides) -> Task:
    """``build("lcfrs_synth", preset="quick"|"long", seed=0, **settings)``; see the module docstring."""
    return _build("lcfrs_synth", LCFRS_PRESETS, preset, seed, cache, overrides)
