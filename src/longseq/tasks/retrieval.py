"""``retrieval`` — byte-level two-document matching, the LRA Retrieval setup on offline data.

LRA Retrieval (Tay et al. 2021, sec. 3.3) asks whether two ACL-Anthology papers are linked by a
citation, each paper encoded separately ("two-tower") as 4,000 bytes and the pair classified from
``[u, v, u*v, u-v]``. The AAN corpus is not installable offline, so this task asks instead: **do two
byte chunks come from the same CPython standard-library module (``.py`` file)?**

Data (the interpreter's stdlib, or ``root``; same file walk as ``lm_code``): every ``*.py`` file
(no site/dist-packages, no ``__pycache__``) is cut into non-overlapping chunks of exactly
``seq_len`` bytes starting at byte 0; the remainder (< ``seq_len`` bytes) is dropped. Files are
assigned to splits by ``int(sha1(relpath), 16) % 100`` (< 90 train, < 95 validation, else test,
the ``lm_code`` rule), so test modules are never seen in training.

Pairs (seeded): half positives, half negatives, shuffled. Both come from the chunks of files with
at least two chunks: positive = chunk ``a`` uniform over those chunks, ``b`` uniform over the other
chunks of ``a``'s file; negative = ``a`` and ``b`` uniform over those chunks, ``b`` from another
file. Each side is then uniform over the same chunk pool whatever the label, so chunk position,
file size or padding carry no label information. Decisions: only full-length chunks are used
(a padded tail chunk would tell a model "short file", and two of them could only be a negative),
so ``mask`` is all True; pairs may repeat (the validation/test pools are small: a few hundred
chunks at 4,000 bytes).

Batches: ``inputs`` int64 ``[B, 2, L]`` bytes, ``mask`` bool ``[B, 2, L]`` (True = real byte),
``targets`` int64 ``[B]`` in {0, 1}; ``meta.extra["pair"] = True``. Chance is 50 %.

Presets:

* ``quick`` — 256-byte chunks, 20,000 / 1,000 / 2,000 pairs; a 1-layer d_model-64 softmax model
  reaches ~0.61 validation accuracy after ~200 steps (1-2 CPU minutes). For reference, thresholding
  the cosine similarity of the two chunks' byte histograms gets ~0.60 (0.70 at 4,000 bytes).
* ``lra`` — 4,000-byte chunks as in LRA, 100,000 / 4,000 / 4,000 pairs (LRA: 147,086 / 18,090 /
  17,437; our held-out chunk pools are too small for that many distinct pairs).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .base import Split, Task, TaskMeta, register_task, resolve_preset
from .cache import cached, source_fingerprint
from .lm import corpus_fingerprint, file_split, stdlib_files, stdlib_root

SPLITS = ("train", "validation", "test")

PRESETS = {
    "quick": dict(seq_len=256, n_train=20_000, n_val=1_000, n_test=2_000, root=None, include_tests=True),
    "lra": dict(seq_len=4000, n_train=100_000, n_val=4_000, n_test=4_000, root=None, include_tests=True),
}
MODEL_DEFAULTS = {
    "quick": dict(d_model=64, n_layers=1, num_heads=2, pooling="mean"),
    "lra": dict(d_model=128, n_layers=4, num_heads=4, pooling="mean"),  # S4 uses 6 x 256, BN
}
TRAIN_DEFAULTS = {
    "quick": dict(steps=600, batch_size=32, lr=3e-3, warmup=50, weight_decay=0.05),
    "lra": dict(steps=30_000, batch_size=32, lr=2e-3, warmup=1000, weight_decay=0.05),
}


class PairSplit(Split):
    """Pairs of rows of a shared uint8 chunk table: ``chunks`` ``[C, L]``, ``pairs`` ``[N, 2]`` chunk
    ids, ``labels`` ``[N]``. Batches are gathered on demand (the table is stored once)."""

    def __init__(self, chunks: torch.Tensor, pairs: torch.Tensor, labels: torch.Tensor):
        self.chunks, self.pairs, self.labels = chunks, pairs, labels
        self.inputs, self.targets, self.mask = None, labels, None
        # real bytes per document ([N, 2]); every chunk is full-length (read by ``tasks.stats``)
        self.lengths = np.full((len(labels), 2), chunks.shape[1], dtype=np.int64)

    def __repr__(self) -> str:
        return f"PairSplit({len(self)} pairs of {self.chunks.shape[1]}-byte chunks)"

    def __len__(self) -> int:
        return int(self.pairs.shape[0])

    def batch(self, index) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        ids = self.pairs[index].long()  # [B, 2]
        inputs = self.chunks[ids.reshape(-1)].reshape(*ids.shape, -1).long()  # [B, 2, L]
        return {
            "inputs": inputs,
            "targets": self.labels[index].long(),
            "mask": torch.ones(inputs.shape, dtype=torch.bool),
        }

    def fingerprint(self, n: int = 16) -> str:
        b = self.batch(torch.arange(min(n, len(self))))
        h = hashlib.sha256()
        for k in ("inputs", "targets", "mask"):
            h.update(np.ascontiguousarray(b[k].numpy()).tobytes())
        return h.hexdigest()


def file_chunks(data: bytes, seq_len: int) -> list[bytes]:
    return [data[i : i + seq_len] for i in range(0, len(data) - seq_len + 1, seq_len)]


def sample_pairs(rng: np.random.Generator, file_of: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (half same-file) over chunk ids ``0..len(file_of)-1``; ``file_of`` sorted by file.
    Returns ``(pairs [n, 2] int64, labels [n] int64)``."""
    C = len(file_of)
    first = np.searchsorted(file_of, file_of, side="left")  # first chunk of each chunk's file
    count = np.searchsorted(file_of, file_of, side="right") - first  # chunks in that file (>= 2)
    n_pos = n // 2
    a = rng.integers(0, C, size=n)
    b = np.empty(n, dtype=np.int64)
    # positives: another chunk of the same file (draw from count-1 slots, skip a's own slot)
    pa = a[:n_pos]
    r = (rng.random(n_pos) * (count[pa] - 1)).astype(np.int64)
    b[:n_pos] = first[pa] + r + (first[pa] + r >= pa)
    # negatives: a chunk of another file (rejection; the pool has many files)
    na = a[n_pos:]
    nb = rng.integers(0, C, size=n - n_pos)
    while (bad := file_of[nb] == file_of[na]).any():
        nb[bad] = rng.integers(0, C, size=int(bad.sum()))
    b[n_pos:] = nb
    labels = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n - n_pos, dtype=np.int64)]
    order = rng.permutation(n)
    return np.stack([a, b], axis=1)[order], labels[order]


def retrieval_arrays(root, files: list[str], seq_len: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """The chunk table and each split's pairs/labels (pure function of its arguments)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x72657472]))
    chunks: list[bytes] = []
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        file_of = []
        for fid, rel in enumerate(f for f in files if file_split(f) == split):
            cs = file_chunks((root / rel).read_bytes(), seq_len)
            if len(cs) >= 2:
                chunks += cs
                file_of += [fid] * len(cs)
        if len(set(file_of)) < 2:
            raise ValueError(
                f"retrieval: the {split} split has fewer than 2 files with >= 2 chunks of "
                f"{seq_len} bytes; use a smaller seq_len or a larger root"
            )
        offset = len(chunks) - len(file_of)
        pairs, labels = sample_pairs(rng, np.asarray(file_of), sizes[split])
        out[f"{split}_pairs"] = (pairs + offset).astype(np.int32)
        out[f"{split}_labels"] = labels.astype(np.int8)
        out[f"{split}_files"] = np.asarray([len(set(file_of)), len(file_of)], dtype=np.int64)
    out["chunks"] = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(-1, seq_len)
    return out


@register_task("retrieval")
def build_retrieval(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    cfg = resolve_preset("retrieval", PRESETS, preset, overrides)
    L = int(cfg["seq_len"])
    if L < 1:
        raise ValueError(f"retrieval: seq_len must be >= 1, got {L}")
    sizes = {"train": int(cfg["n_train"]), "validation": int(cfg["n_val"]), "test": int(cfg["n_test"])}
    if min(sizes.values()) < 2:
        raise ValueError(f"retrieval: n_train, n_val and n_test must be >= 2, got {sizes}")
    root = stdlib_root(cfg["root"])
    files = stdlib_files(root, bool(cfg["include_tests"]))
    fp = corpus_fingerprint(root, files)
    key = dict(cfg, root=str(root.resolve()), corpus=fp)
    arrays = cached(
        "retrieval",
        preset,
        seed,
        key,
        lambda: retrieval_arrays(root, files, L, sizes, seed),
        source=source_fingerprint(__file__),
    )
    chunks = torch.from_numpy(arrays["chunks"])
    splits = {
        s: PairSplit(chunks, torch.from_numpy(arrays[f"{s}_pairs"]), torch.from_numpy(arrays[f"{s}_labels"]))
        for s in SPLITS
    }
    extra = {
        "pair": True,
        "config": cfg,
        "corpus_fingerprint": fp,
        "root": str(root),
        "files": {s: int(arrays[f"{s}_files"][0]) for s in SPLITS},
        "chunks": {s: int(arrays[f"{s}_files"][1]) for s in SPLITS},
        "positive_fraction": {s: float(arrays[f"{s}_labels"].mean()) for s in SPLITS},
    }
    meta = TaskMeta(
        "retrieval",
        "classification",
        256,
        L,
        num_classes=2,
        preset=preset,
        seed=seed,
        description="do two byte chunks come from the same CPython stdlib module? (two-tower)",
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
