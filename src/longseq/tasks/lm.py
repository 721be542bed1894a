"""Byte-level language modelling on real offline text: ``lm_code`` and ``lm_dict``.

Both tasks are kind ``"lm"`` with vocabulary 256 (raw bytes) and metric ``"bpb"`` (bits per byte:
the trainer's mean next-byte cross-entropy in nats divided by ln 2). Each split is one long uint8
byte array (memory-mapped from the data cache) read through :class:`ByteWindowSplit`:

* train: ``len(split)`` windows per epoch, window ``i`` starting at a pseudo-random offset that is a
  pure function of ``(seed, i)`` (splitmix64 hash), so any batch can be rebuilt from its indices;
* validation/test: contiguous non-overlapping windows covering every byte once; the last window is
  right-padded (input 0, target ``IGNORE``) so bpb is exact over the whole split.

``inputs = bytes[o : o+L]``, ``targets = bytes[o+1 : o+L+1]``.

Corpora:

``lm_code`` — the CPython standard library that ships with the running interpreter
(``sysconfig.get_paths()["stdlib"]``, or the ``root`` setting): every ``*.py`` file, skipping
``site-packages``/``dist-packages``/``__pycache__``, sorted by POSIX relative path and assigned to a
split by ``int(sha1(relpath), 16) % 100`` (< 90 train, < 95 validation, else test), so whole files
stay in one split. A split is its files' bytes concatenated in path order (no separator). The
corpus fingerprint (sha256 over ``relpath \\0 bytes`` for every file in order) and per-split sizes
are in ``meta.extra``; the corpus changes with the Python version, so compare numbers only between
runs with the same fingerprint. ``include_tests=False`` drops files under ``test``/``tests``/
``idle_test`` directories (about 60 % of the bytes in 3.11).

``lm_dict`` — GCIDE, the Collaborative International Dictionary of English (Webster 1913 +
WordNet, Debian package ``dict-gcide``, ~40 MB of ASCII). The dictd ``.dict.dz`` file is
gzip-compatible and is read directly (no dictd service needed). Contiguous split: the first 90 %
of the bytes train, the next 5 % validation, the last 5 % test (enwik8 style).

Presets:

* ``quick`` — seq_len 256, the first 4 MB of the train bytes, 256 KB of each evaluation split,
  20,000 train windows per epoch; a 2-layer d_model-64 model gets well under 8 bpb (uniform) in
  a few minutes on 2 CPU cores.
* ``lra`` / ``full`` — seq_len 1024 (``full``: 4096), all the bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import torch

from .base import IGNORE, Split, Task, TaskMeta, register_task, resolve_preset
from .cache import cached, data_dir, source_fingerprint

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_TEST_DIRS = {"test", "tests", "idle_test"}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a cheap bijective hash."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class ByteWindowSplit(Split):
    """Windows over one long uint8 byte array ``data`` (a memmap is fine; nothing is copied).

    ``windows=None``: evaluation mode, ``ceil((len(data) - 1) / seq_len)`` contiguous windows.
    ``windows=n``: train mode, ``n`` windows at offsets ``splitmix64(seed_key + i) % (len(data) - seq_len)``.
    """

    def __init__(self, data: np.ndarray, seq_len: int, *, windows: int | None = None, seed: int = 0):
        if data.ndim != 1 or data.dtype != np.uint8:
            raise ValueError(f"ByteWindowSplit needs a 1-D uint8 array, got {data.dtype}{list(data.shape)}")
        if len(data) < seq_len + 2:
            raise ValueError(f"a split of {len(data)} bytes is too short for seq_len={seq_len}")
        self.data, self.seq_len, self.windows, self.seed = data, int(seq_len), windows, int(seed)
        self.mask = None
        # fold the seed into one 64-bit key (sha256, so nearby seeds give unrelated offset streams)
        self._key = np.uint64(int.from_bytes(hashlib.sha256(f"bytewin{seed}".encode()).digest()[:8], "little"))

    def __repr__(self) -> str:
        mode = f"train, {self.windows} windows" if self.train else f"eval, {len(self)} windows"
        return f"ByteWindowSplit({len(self.data)} bytes, seq_len={self.seq_len}, {mode})"

    @property
    def train(self) -> bool:
        return self.windows is not None

    @property
    def num_bytes(self) -> int:
        return len(self.data)

    def __len__(self) -> int:
        if self.train:
            return int(self.windows)
        return math.ceil((len(self.data) - 1) / self.seq_len)

    @property
    def lengths(self) -> np.ndarray:
        """Real (non-``IGNORE``) targets per window: ``seq_len`` except in the last evaluation window."""
        o = self.offsets(np.arange(len(self)))
        return np.minimum(self.seq_len, len(self.data) - 1 - o)

    @property
    def targets(self) -> "_LazyTargets":
        """Sliceable view of the target windows (``split.targets[i:j]`` -> int64 ``[j-i, L]``),
        materialised per slice, for code that reads targets like a tensor (``tasks.stats``)."""
        return _LazyTargets(self)

    def offsets(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)})")
        if self.train:
            h = _splitmix64(index.astype(np.uint64) + self._key)
            return (h % np.uint64(len(self.data) - self.seq_len)).astype(np.int64)
        return index * self.seq_len

    def batch(self, index) -> dict[str, torch.Tensor]:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        o = self.offsets(np.atleast_1d(index))  # [B]
        pos = o[:, None] + np.arange(self.seq_len + 1)  # [B, L+1]
        valid = pos < len(self.data)
        window = self.data[np.minimum(pos, len(self.data) - 1)].astype(np.int64)
        inputs = np.where(valid[:, :-1], window[:, :-1], 0)
        targets = np.where(valid[:, 1:], window[:, 1:], IGNORE)
        return {"inputs": torch.from_numpy(inputs), "targets": torch.from_numpy(targets)}

    def fingerprint(self, n: int = 16) -> str:
        b = self.batch(np.arange(min(n, len(self))))
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(b["inputs"].numpy()).tobytes())
        h.update(np.ascontiguousarray(b["targets"].numpy()).tobytes())
        return h.hexdigest()


class _LazyTargets:
    def __init__(self, split: ByteWindowSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.split), self.split.seq_len)

    def __getitem__(self, key) -> torch.Tensor:
        index = np.arange(len(self.split))[key]  # slice, int or index array
        out = self.split.batch(np.atleast_1d(index))["targets"]
        return out[0] if np.ndim(index) == 0 else out


# --------------------------------------------------------------------------------------------
# lm_code: the CPython standard library


def stdlib_root(root: str | os.PathLike | None = None) -> Path:
    path = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise FileNotFoundError(
            f"standard-library directory {str(path)!r} does not exist (set root=DIR to a directory of .py files)"
        )
    return path


def stdlib_files(root: Path, include_tests: bool = True) -> list[str]:
    """Sorted POSIX relative paths of the ``*.py`` files under ``root`` (no site/dist-packages,
    no ``__pycache__``; with ``include_tests=False`` no test directories)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and (include_tests or d not in _TEST_DIRS)]
        for f in filenames:
            if f.endswith(".py"):
                out.append(Path(dirpath, f).relative_to(root).as_posix())
    if not out:
        raise FileNotFoundError(f"no .py files under {str(root)!r}")
    return sorted(out)


def file_split(relpath: str) -> str:
    """90/5/5 assignment of a file by ``int(sha1(relpath), 16) % 100``."""
    r = int(hashlib.sha1(relpath.encode()).hexdigest(), 16) % 100
    return "train" if r < 90 else "validation" if r < 95 else "test"


def corpus_fingerprint(root: Path, files: list[str]) -> str:
    """sha256 over ``relpath \\0 bytes`` for each file, in the given (sorted) order."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode())
        h.update(b"\0")
        h.update((root / rel).read_bytes())
    return h.hexdigest()


def stdlib_corpus(root: Path, files: list[str]) -> dict[str, np.ndarray]:
    """``{split: uint8 bytes}``: each split's files concatenated in path order."""
    parts: dict[str, list[bytes]] = {"train": [], "validation": [], "test": []}
    for rel in files:
        parts[file_split(rel)].append((root / rel).read_bytes())
    return {k: np.frombuffer(b"".join(v), dtype=np.uint8).copy() for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# lm_dict: GCIDE

GCIDE_PACKAGE = "dict-gcide"


def gcide_candidates() -> list[Path]:
    return [
        Path("/usr/share/dictd/gcide.dict.dz"),
        data_dir() / "sources" / "dict-gcide" / "usr" / "share" / "dictd" / "gcide.dict.dz",
    ]


def find_gcide(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"lm_dict: path={str(p)!r} does not exist")
        return p
    for p in gcide_candidates():
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in gcide_candidates())
    raise FileNotFoundError(
        f"lm_dict needs GCIDE from the Debian package {GCIDE_PACKAGE!r} (looked in {looked}). Run "
        f"scripts/install_data.sh (apt-get download dict-gcide && dpkg -x dict-gcide_*.deb "
        f'"$LONGSEQ_DATA/sources/dict-gcide"), or pass path=FILE (gcide.dict.dz or plain text).'
    )


def read_text_bytes(path: Path) -> bytes:
    """File bytes, gunzipped when the file is gzip/dictzip (magic 1f 8b)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        with gzip.open(path, "rb") as f:
            return f.read()
    return path.read_bytes()


def contiguous_split(data: np.ndarray, fractions=(0.90, 0.05, 0.05)) -> dict[str, np.ndarray]:
    n = len(data)
    a = int(n * fractions[0])
    b = a + int(n * fractions[1])
    return {"train": data[:a], "validation": data[a:b], "test": data[b:]}


# --------------------------------------------------------------------------------------------
# builders

_LM_PRESETS = {
    "quick": dict(seq_len=256, train_windows=20_000, max_train_bytes=4_000_000, max_eval_bytes=262_144),
    "lra": dict(seq_len=1024, train_windows=100_000, max_train_bytes=None, max_eval_bytes=None),
    "full": dict(seq_len=4096, train_windows=100_000, max_train_bytes=None, max_eval_bytes=None),
}
_LM_MODEL = {
    "quick": dict(d_model=64, n_layers=2, num_heads=2),
    "lra": dict(d_model=256, n_layers=6, num_heads=4),
    "full": dict(d_model=512, n_layers=8, num_heads=8),
}
_LM_TRAIN = {
    "quick": dict(steps=600, batch_size=32, lr=3e-3, warmup=50, weight_decay=0.1),
    "lra": dict(steps=20_000, batch_size=32, lr=1e-3, warmup=1000, weight_decay=0.1),
    "full": dict(steps=50_000, batch_size=16, lr=6e-4, warmup=2000, weight_decay=0.1),
}

LM_CODE_PRESETS = {k: dict(v, root=None, include_tests=True) for k, v in _LM_PRESETS.items()}
LM_DICT_PRESETS = {k: dict(v, path=None) for k, v in _LM_PRESETS.items()}


def _truncate(corpus: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    out = {}
    for k, v in corpus.items():
        cap = cfg["max_train_bytes"] if k == "train" else cfg["max_eval_bytes"]
        out[k] = v if cap is None else v[: int(cap)]
    return out


def _lm_task(name, corpus, cfg, preset, seed, description, extra) -> Task:
    L = int(cfg["seq_len"])
    if L < 1 or int(cfg["train_windows"]) < 1:
        raise ValueError(f"{name}: seq_len and train_windows must be >= 1")
    splits = {
        "train": ByteWindowSplit(corpus["train"], L, windows=int(cfg["train_windows"]), seed=seed),
        "validation": ByteWindowSplit(corpus["validation"], L),
        "test": ByteWindowSplit(corpus["test"], L),
    }
    extra = dict(extra, config=cfg, split_bytes={k: int(len(v)) for k, v in corpus.items()})
    meta = TaskMeta(name, "lm", 256, L, metric="bpb", preset=preset, seed=seed, description=description, extra=extra)
    return Task(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        dict(_LM_MODEL.get(preset, _LM_MODEL["lra"])),
        dict(_LM_TRAIN.get(preset, _LM_TRAIN["lra"])),
    )


@register_task("lm_code")
def build_lm_code(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    cfg = resolve_preset("lm_code", LM_CODE_PRESETS, preset, overrides)
    root = stdlib_root(cfg["root"])
    files = stdlib_files(root, bool(cfg["include_tests"]))
    fp = corpus_fingerprint(root, files)
    key = {"root": str(root.resolve()), "include_tests": bool(cfg["include_tests"]), "corpus": fp}
    # the bytes depend on the corpus only (not the preset or seed): one cache entry for all of them
    corpus = cached("lm_code", "all", 0, key, lambda: stdlib_corpus(root, files), source=source_fingerprint(__file__))
    nfiles = {s: sum(file_split(f) == s for f in files) for s in ("train", "validation", "test")}
    extra = {
        "corpus_fingerprint": fp,
        "root": str(root),
        "num_files": nfiles,
        "corpus_bytes": {k: int(len(v)) for k, v in corpus.items()},
    }
    return _lm_task(
        "lm_code",
        _truncate(corpus, cfg),
        cfg,
        preset,
        seed,
        "byte-level LM on the CPython standard library (files split 90/5/5 by sha1 of path)",
        extra,
    )


@register_task("lm_dict")
def build_lm_dict(preset: str = "quick", seed: int = 0, **overrides) -> Task:
    cfg = resolve_preset("lm_dict", LM_DICT_PRESETS, preset, overrides)
    path = find_gcide(cfg["path"])
    st = path.stat()
    src = source_fingerprint(path) if st.st_size < (1 << 28) else f"{path}:{st.st_size}"
    corpus = cached(
        "lm_dict",
        "all",
        0,
        {"source_file": src},
        lambda: contiguous_split(np.frombuffer(read_text_bytes(path), dtype=np.uint8).copy()),
        source=source_fingerprint(__file__),
    )
    extra = {
        "source": str(path),
        "source_fingerprint": src,
        "corpus_bytes": {k: int(len(v)) for k, v in corpus.items()},
    }
    return _lm_task(
        "lm_dict",
        _truncate(corpus, cfg),
        cfg,
        preset,
        seed,
        "byte-level LM on GCIDE (Webster 1913 + WordNet), contiguous 90/5/5 split",
        extra,
    )
