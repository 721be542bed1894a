"""Dataset statistics for ``longseq data stats TASK``: sizes, class balance, lengths.

``stats(task)`` returns a JSON-ready dict::

    {"task", "kind", "preset", "seed", "vocab_size", "seq_len", "num_classes",
     "splits": {name: {"n", "length": {min, median, mean, max},
                       # classification:
                       "class_counts": [...], "class_fractions": [...], "majority_baseline",
                       # lm:
                       "targets_per_example": {min, mean, max}}}}

Lengths come from ``CompactSplit.lengths`` or the mask (real tokens), else the full width.
Everything is computed in chunks, so memory-mapped cached splits are never loaded whole.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import IGNORE, Split, Task

CHUNK = 4096


def _lengths(split: Split) -> np.ndarray:
    lengths = getattr(split, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, dtype=np.int64)
    if split.mask is not None:
        return np.concatenate(
            [split.mask[i : i + CHUNK].sum(1).numpy() for i in range(0, len(split), CHUNK)] or [np.zeros(0, np.int64)]
        )
    return np.full(len(split), split.inputs.shape[1], dtype=np.int64)


def _summary(x: np.ndarray, median: bool = True) -> dict:
    if len(x) == 0:
        return {}
    out = {"min": int(x.min()), "mean": float(x.mean()), "max": int(x.max())}
    if median:
        out["median"] = float(np.median(x))
    return out


def split_stats(split: Split, kind: str, num_classes: int | None) -> dict:
    out = {"n": len(split), "length": _summary(_lengths(split))}
    if kind == "classification":
        y = np.asarray(split.targets, dtype=np.int64).reshape(-1)
        counts = np.bincount(y, minlength=num_classes or 0)
        out["class_counts"] = counts.tolist()
        out["class_fractions"] = (counts / max(1, len(y))).round(4).tolist()
        out["majority_baseline"] = float(counts.max() / len(y)) if len(y) else None
    else:
        per = [(split.targets[i : i + CHUNK] != IGNORE).sum(1).numpy() for i in range(0, len(split), CHUNK)]
        out["targets_per_example"] = _summary(np.concatenate(per) if per else np.zeros(0), median=False)
    return out


def stats(task: Task) -> dict:
    """Sizes, class balance (classification) or answer counts (lm), and length statistics."""
    m = task.meta
    with torch.no_grad():
        splits = {name: split_stats(s, m.kind, m.num_classes) for name, s in task.splits().items()}
    out = {
        "task": m.name,
        "kind": m.kind,
        "preset": m.preset,
        "seed": m.seed,
        "vocab_size": m.vocab_size,
        "seq_len": m.seq_len,
        "num_classes": m.num_classes,
        "splits": splits,
    }
    if m.kind == "parsing":  # unlabeled sentence F1 of reference parsers (oracle, branching baselines)
        out["baselines"] = m.extra.get("baselines", {})
    return out
