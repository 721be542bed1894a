"""``text`` — byte-level document classification of King James Bible chapters (LRA-Text analog).

LRA Text classifies IMDb reviews from raw bytes (length 4,000/4,096); IMDb is not installable
offline, so this task classifies the 1,189 chapters of the King James Bible (public-domain text,
Debian package ``bible-kjv``; exported with its ``bible`` program: ``bible -f gen1:1-rev22:21``,
4.4 MB ASCII, chapter median ~3.5 KB). A document is one chapter's verses joined by newlines with
the verse references removed (they would name the book), as bytes (vocabulary 256, right-padded
with 0 and ``mask`` False past the end).

Labels (``label`` setting):

* ``"testament"`` (2 classes): Old (929 chapters, 78 %) vs New Testament (260 chapters).
* ``"group"`` (7 classes), the traditional book groups: 0 Law (Genesis–Deuteronomy, 187 chapters),
  1 History (Joshua–Esther, 249), 2 Wisdom/Poetry (Job–Song of Solomon, 243), 3 Prophets
  (Isaiah–Malachi, 250), 4 Gospels + Acts (117), 5 Epistles (Romans–Jude, 121), 6 Revelation (22).

Splits: chapters are split 80/10/10 per class by a seeded shuffle (stratified, so every class is in
every split), so no chapter's text appears in two splits. ``window=False`` keeps one document per
chapter, truncated to ``seq_len`` bytes (LRA truncates reviews the same way); ``window=True`` cuts
every chapter into consecutive ``seq_len``-byte windows (a trailing window shorter than
``seq_len // 4`` is dropped unless it is the chapter's only one), each labelled by its chapter.

Class imbalance (``balance`` setting): ``"train"`` oversamples the *train* split to equal class
counts (each class's documents tiled, the remainder a seeded subset) and keeps the natural
distribution in validation/test, where ``meta.extra["majority_baseline"]`` is the accuracy of
always predicting the most frequent class (testament: ~0.78) — the number to beat, not 50 %.
``"all"`` also downsamples validation and test (seeded) to equal class counts, so chance is exactly
1 / num_classes, as in LRA Text (IMDb is balanced). ``"none"`` keeps every split natural.

Presets:

* ``quick`` — testament, 256-byte windows, ``balance="all"``: 20,054 / 832 / 782 documents (train
  oversampled, evaluation downsampled; chance 50 %). A 2-layer d_model-64 softmax model reaches
  ~0.78 balanced validation accuracy after ~400 steps (2-3 CPU minutes).
* ``lra`` — testament, whole chapters truncated at 4,096 bytes, ``balance="train"`` (951 / 119 /
  119 chapters; train oversampled to 743 + 743; evaluation keeps all chapters, majority 0.78, as
  downsampling would leave 52).
* ``lra_group`` — the 7-way group variant at 4,096 bytes, ``balance="train"``.

A different export (same ``bible -f`` line format: ``<Book><chapter>:<verse> <text>``) can be
given as ``source=FILE``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .base import Task, TaskMeta, register_task, resolve_preset
from .cache import CompactSplit, cached, source_fingerprint

DEBIAN_PACKAGE = "bible-kjv"
EXPORT_RANGE = "gen1:1-rev22:21"

# Book abbreviations as the Debian `bible` program prints them, in canonical order.
BOOKS = (
    "Ge Exo Lev Num Deu Josh Jdgs Ruth 1Sm 2Sm 1Ki 2Ki 1Chr 2Chr Ezra Neh Est Job Psa Prv Eccl SSol "
    "Isa Jer Lam Eze Dan Hos Joel Amos Obad Jonah Mic Nahum Hab Zep Hag Zec Mal "
    "Mat Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phi Col 1Th 2Th 1Tim 2Tim Titus Phmn Heb Jas "
    "1Pet 2Pet 1Jn 2Jn 3Jn Jude Rev"
).split()
GROUPS = ("Law", "History", "Wisdom", "Prophets", "Gospels+Acts", "Epistles", "Revelation")
# first book index of each group (Law starts at Genesis = 0)
_GROUP_STARTS = (0, 5, 17, 22, 39, 44, 65)
TESTAMENTS = ("Old Testament", "New Testament")
_NT_START = 39  # Matthew

_VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) ?(.*)$")

PRESETS = {
    "quick": dict(label="testament", seq_len=256, window=True, balance="all", source=None),
    "lra": dict(label="testament", seq_len=4096, window=False, balance="train", source=None),
    "lra_group": dict(label="group", seq_len=4096, window=False, balance="train", source=None),
}
MODEL_DEFAULTS = {
    "quick": dict(d_model=64, n_layers=2, num_heads=2, pooling="mean"),
    "lra": dict(d_model=64, n_layers=4, num_heads=4, pooling="mean"),  # S4 Text: 4 x 64
    "lra_group": dict(d_model=64, n_layers=4, num_heads=4, pooling="mean"),
}
TRAIN_DEFAULTS = {
    "quick": dict(steps=600, batch_size=32, lr=2e-3, warmup=50, weight_decay=0.05),
    "lra": dict(steps=5_000, batch_size=16, lr=1e-3, warmup=200, weight_decay=0.05),
    "lra_group": dict(steps=5_000, batch_size=16, lr=1e-3, warmup=200, weight_decay=0.05),
}


def book_group(book: int) -> int:
    return int(np.searchsorted(_GROUP_STARTS, book, side="right") - 1)


def export_kjv(source: str | os.PathLike | None = None) -> bytes:
    """The ``bible -f gen1:1-rev22:21`` export: read from ``source`` or produced by the ``bible`` program."""
    if source is not None:
        p = Path(source).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"text: source={str(p)!r} does not exist")
        return p.read_bytes()
    exe = shutil.which("bible")
    if exe is None:
        raise FileNotFoundError(
            f"text needs the King James Bible from the Debian package {DEBIAN_PACKAGE!r} (its `bible` program "
            f"is not on PATH): apt-get install -y {DEBIAN_PACKAGE} (or scripts/install_data.sh), or set "
            f"source=FILE to the output of `bible -f {EXPORT_RANGE}`"
        )
    out = subprocess.run([exe, "-f", EXPORT_RANGE], capture_output=True, check=True, stdin=subprocess.DEVNULL)
    return out.stdout


def parse_chapters(export: bytes) -> list[tuple[int, int, bytes]]:
    """``[(book index, chapter, text)]`` in export order; text = the chapter's verses, one per line."""
    chapters: dict[tuple[int, int], list[bytes]] = {}
    index = {b: i for i, b in enumerate(BOOKS)}
    for n, line in enumerate(export.decode("latin-1").splitlines(), 1):
        if not line.strip():
            continue
        m = _VERSE.match(line)
        if m is None or m.group(1) not in index:
            raise ValueError(
                f"text: line {n} of the export is not '<Book><chapter>:<verse> <text>' "
                f"with a known book abbreviation: {line[:60]!r}"
            )
        chapters.setdefault((index[m.group(1)], int(m.group(2))), []).append(m.group(4).encode("latin-1"))
    if not chapters:
        raise ValueError("text: the export holds no verses")
    return [(b, c, b"\n".join(v)) for (b, c), v in chapters.items()]


def _stratified_split(rng, labels: np.ndarray, frac=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Chapter indices per split: each class shuffled and cut 80/10/10 (>= 1 chapter per split
    when the class has >= 3)."""
    out = {"train": [], "validation": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_val = max(int(round(n * frac[1])), 1 if n >= 3 else 0)
        n_test = max(int(round(n * frac[2])), 1 if n >= 3 else 0)
        out["validation"].append(idx[:n_val])
        out["test"].append(idx[n_val : n_val + n_test])
        out["train"].append(idx[n_val + n_test :])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def _documents(texts: list[bytes], labels: np.ndarray, seq_len: int, window: bool):
    docs, ys = [], []
    for t, y in zip(texts, labels):
        if not window:
            pieces = [t[:seq_len]]
        else:
            pieces = [t[i : i + seq_len] for i in range(0, len(t), seq_len)]
            pieces = pieces[:1] + [p for p in pieces[1:] if len(p) >= seq_len // 4]
        docs += pieces
        ys += [y] * len(pieces)
    return docs, np.asarray(ys, dtype=np.int64)


def _undersample(rng, labels: np.ndarray) -> np.ndarray:
    """Indices of a seeded subset with every class at the smallest class's count."""
    counts = np.bincount(labels)
    target = counts[counts > 0].min()
    keep = [rng.choice(np.flatnonzero(labels == c), size=target, replace=False) for c in np.flatnonzero(counts)]
    return np.sort(np.concatenate(keep))


def _oversample(rng, labels: np.ndarray) -> np.ndarray:
    """Indices that give every class the largest class's count (tiled, remainder a seeded subset)."""
    counts = np.bincount(labels)
    target = counts.max()
    out = []
    for c in np.flatnonzero(counts):
        idx = np.flatnonzero(labels == c)
        reps, rem = divmod(target, len(idx))
        out += [np.tile(idx, reps), np.sort(rng.choice(idx, size=rem, replace=False))]
    return np.sort(np.concatenate(out))


def text_arrays(export: bytes, cfg: dict, seed: int) -> dict[str, np.ndarray]:
    chapters = parse_chapters(export)
    books = np.asarray([b for b, _, _ in chapters])
    if cfg["label"] == "testament":
        labels = (books >= _NT_START).astype(np.int64)
    else:
        labels = np.asarray([book_group(b) for b in books], dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x74657874]))
    parts = _stratified_split(rng, labels)
    L = int(cfg["seq_len"])
    out = {}
    for split, idx in parts.items():
        docs, ys = _documents([chapters[i][2] for i in idx], labels[idx], L, bool(cfg["window"]))
        if not docs:
            raise ValueError(f"text: the {split} split is empty (the export is too small)")
        if cfg["balance"] != "none":
            if split == "train":
                keep = _oversample(rng, ys)
            elif cfg["balance"] == "all":
                keep = _undersample(rng, ys)
            else:
                keep = np.arange(len(ys))
            docs, ys = [docs[i] for i in keep], ys[keep]
        x = np.zeros((len(docs), L), dtype=np.uint8)
        for i, d in enumerate(docs):
            x[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
        out[f"{split}_inputs"] = x
        out[f"{split}_targets"] = ys
        out[f"{split}_lengths"] = np.asarray([len(d) for d in docs], dtype=np.int32)
        out[f"{split}_chapters"] = np.asarray(idx, dtype=np.int32)
    out["chapter_labels"] = labels
    return out


@register_task("text")
def build_text(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    cfg = resolve_preset("text", PRESETS, preset, overrides)
    if cfg["label"] not in ("testament", "group"):
        raise ValueError(f"text: label must be 'testament' or 'group', got {cfg['label']!r}")
    if cfg["balance"] not in ("none", "train", "all"):
        raise ValueError(f"text: balance must be 'none', 'train' or 'all', got {cfg['balance']!r}")
    if int(cfg["seq_len"]) < 4:
        raise ValueError(f"text: seq_len must be >= 4, got {cfg['seq_len']!r}")
    export = export_kjv(cfg["source"])
    data_fp = hashlib.sha256(export).hexdigest()
    key = dict(cfg, source=data_fp)
    arrays = cached(
        "text", preset, seed, key, lambda: text_arrays(export, cfg, seed), source=source_fingerprint(__file__) + data_fp
    )
    splits = {s: CompactSplit.from_arrays(arrays, s) for s in ("train", "validation", "test")}
    names = TESTAMENTS if cfg["label"] == "testament" else GROUPS
    k = len(names)
    counts = {s: np.bincount(np.asarray(arrays[f"{s}_targets"]), minlength=k).tolist() for s in splits}
    chapter_labels = np.asarray(arrays["chapter_labels"])
    extra = {
        "config": cfg,
        "source_fingerprint": data_fp,
        "classes": list(names),
        "class_counts": counts,
        "chapter_counts": {
            s: np.bincount(chapter_labels[np.asarray(arrays[f"{s}_chapters"])], minlength=k).tolist() for s in splits
        },
        "majority_baseline": {s: max(c) / sum(c) for s, c in counts.items()},
    }
    meta = TaskMeta(
        "text",
        "classification",
        256,
        int(cfg["seq_len"]),
        num_classes=k,
        preset=preset,
        seed=seed,
        description=f"KJV chapter -> {cfg['label']} from bytes",
        extra=extra,
    )
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(MODEL_DEFAULTS.get(preset, MODEL_DEFAULTS["lra"])),
        dict(TRAIN_DEFAULTS.get(preset, TRAIN_DEFAULTS["lra"])),
    )
