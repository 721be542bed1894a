"""Constituency trees as span sets, and the unlabeled F1 of unsupervised parsing.

One routine for every model that induces trees (neural PCFG, LCFRS-2, ON-LSTM, StructFormer)
and every treebank task (``pcfg_synth``, ``lcfrs_synth``). It imports nothing from longseq:
tasks, models and reports all use it.

A *constituent* is a tuple of half-open blocks over word positions, ``((i, j),)`` for a
continuous span or ``((i, j), (k, l))`` with ``j < k`` for a discontinuous one (fan-out 2, as in
LCFRS-2). A plain pair ``(i, j)`` is accepted anywhere and means ``((i, j),)``.

F1 convention (Kim, Dyer & Rush 2019, compound PCFG evaluation; Shen et al. 2018/2019): spans
are unlabeled and compared as sets (duplicates from unary chains count once); *trivial* spans
are dropped before comparing: single words and the whole sentence. Sentence-level F1 is the mean
over sentences of each sentence's F1; a sentence whose gold set is empty after the drop (length
<= 2) counts recall 1 and, if the prediction is empty too, precision 1 (as that code does).
Corpus-level F1 pools the counts of all sentences.
"""

from __future__ import annotations

from typing import Iterable, Sequence

Block = tuple[int, int]
Constituent = tuple[Block, ...]


def normalize(c) -> Constituent:
    """``(i, j)`` or a sequence of blocks -> a sorted tuple of blocks with adjacent blocks merged."""
    if len(c) == 2 and all(isinstance(v, int) for v in c):
        c = (tuple(c),)
    blocks = sorted((int(i), int(j)) for i, j in c)
    merged: list[list[int]] = []
    for i, j in blocks:
        if not i < j:
            raise ValueError(f"empty or reversed block ({i}, {j}) in constituent {c}")
        if merged and i < merged[-1][1]:
            raise ValueError(f"overlapping blocks in constituent {c}")
        if merged and i == merged[-1][1]:
            merged[-1][1] = j
        else:
            merged.append([i, j])
    return tuple((i, j) for i, j in merged)


def width(c: Constituent) -> int:
    return sum(j - i for i, j in c)


def is_discontinuous(c) -> bool:
    return len(normalize(c)) > 1


def nontrivial(constituents: Iterable, n: int) -> set[Constituent]:
    """The set of constituents minus single words and the whole sentence ``[0, n)``."""
    out = set()
    for c in constituents:
        c = normalize(c)
        if c[0][0] < 0 or c[-1][1] > n:
            raise ValueError(f"constituent {c} lies outside a sentence of length {n}")
        if width(c) > 1 and c != ((0, n),):
            out.add(c)
    return out


def _prf(pred: set, gold: set) -> tuple[float, float, float]:
    hit = len(pred & gold)
    prec = hit / len(pred) if pred else 1.0 if not gold else 0.0
    rec = hit / len(gold) if gold else 1.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return prec, rec, f1


def sentence_f1(pred: Iterable, gold: Iterable, n: int, *, only_discontinuous: bool = False) -> float:
    """Unlabeled F1 of one sentence of length ``n`` (trivial spans dropped).

    ``only_discontinuous`` restricts both sets to discontinuous constituents (the LCFRS metric)."""
    p, g = nontrivial(pred, n), nontrivial(gold, n)
    if only_discontinuous:
        p, g = {c for c in p if len(c) > 1}, {c for c in g if len(c) > 1}
    return _prf(p, g)[2]


def corpus_f1(
    preds: Sequence[Iterable], golds: Sequence[Iterable], lengths: Sequence[int], *, only_discontinuous: bool = False
) -> dict[str, float]:
    """``{"sentence_f1", "corpus_f1", "precision", "recall", "n"}`` over a corpus.

    ``sentence_f1`` is the mean of per-sentence F1 (the grammar-induction headline number);
    the others pool span counts over the corpus. Sentences of length 1 are skipped."""
    if not len(preds) == len(golds) == len(lengths):
        raise ValueError(f"preds, golds and lengths differ in length: {len(preds)}, {len(golds)}, {len(lengths)}")
    sent, hit, npred, ngold, count = 0.0, 0, 0, 0, 0
    for pred, gold, n in zip(preds, golds, lengths):
        if n < 2:
            continue
        p, g = nontrivial(pred, n), nontrivial(gold, n)
        if only_discontinuous:
            p, g = {c for c in p if len(c) > 1}, {c for c in g if len(c) > 1}
        sent += _prf(p, g)[2]
        hit, npred, ngold, count = hit + len(p & g), npred + len(p), ngold + len(g), count + 1
    prec = hit / npred if npred else 0.0
    rec = hit / ngold if ngold else 0.0
    return {
        "sentence_f1": sent / max(count, 1),
        "corpus_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "precision": prec,
        "recall": rec,
        "n": count,
    }


def right_branching(n: int) -> list[Constituent]:
    """Spans of the right-branching binary tree over ``n`` words: [i, n) for every i."""
    return [((i, n),) for i in range(n - 1)] + [((i, i + 1),) for i in range(n)]


def left_branching(n: int) -> list[Constituent]:
    """Spans of the left-branching binary tree over ``n`` words: [0, j) for every j."""
    return [((0, j),) for j in range(2, n + 1)] + [((i, i + 1),) for i in range(n)]


def spans_of(tree) -> list[Constituent]:
    """Continuous constituents of a nested-sequence tree whose leaves are non-sequences
    (``(("the", "dog"), "barks")`` -> [[0, 3), [0, 2), [0, 1), [1, 2), [2, 3)]), root first."""
    out: list[Constituent] = []

    def walk(t, start: int) -> int:
        if isinstance(t, (list, tuple)):
            slot = len(out)
            out.append(None)  # type: ignore[arg-type]
            end = start
            for child in t:
                end = walk(child, end)
            out[slot] = ((start, end),)
            return end
        out.append(((start, start + 1),))
        return start + 1

    walk(tree, 0)
    return out


def split_by_distance(distances: Sequence[float], start: int = 0) -> list[Constituent]:
    """Binary tree from syntactic distances (ON-LSTM / StructFormer, Shen et al. 2018 Alg. 1):
    ``distances[k]`` scores the boundary between words ``k`` and ``k + 1`` (length n - 1); the
    largest splits first, recursively (ties: the leftmost). Returns the spans, root first."""
    n = len(distances) + 1
    spans: list[Constituent] = [((start, start + n),)]
    if n == 1:
        return spans
    k = max(range(n - 1), key=lambda i: (distances[i], -i))
    spans += split_by_distance(distances[:k], start)
    spans += split_by_distance(distances[k + 1 :], start + k + 1)
    return spans
