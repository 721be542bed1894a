"""On-disk cache for generated or prepared task data: memory-mapped ``.npy`` arrays + a manifest.

Usage (in a task builder)::

    arrays = cached("listops", preset, seed, cfg, lambda: generate(cfg, seed), source=source_fingerprint(__file__))
    train = CompactSplit.from_arrays(arrays, "train")

``cached`` returns ``dict[str, np.ndarray]`` whose values are read-only memory maps (copy-on-write, so
``torch.from_numpy`` works without copying the file into memory). The first call runs ``build_fn``
and stores its result; later calls with the same key load it.

Layout: ``data_dir() / name / f"{preset}-seed{seed}-{key}"`` holds one ``<array>.npy`` per array and
``manifest.json`` with the task name, preset, seed, config, array shapes/dtypes/sha256, the source
fingerprint and the format version. ``key`` hashes (name, preset, seed, config, source, format
version), so changing the generator's source or a setting never reuses stale data.

* ``data_dir()`` is ``$LONGSEQ_DATA`` if set, else ``$XDG_CACHE_HOME/longseq``, else
  ``~/.cache/longseq``. Tests point ``LONGSEQ_DATA`` at a temporary directory.
* Writes are atomic: arrays and manifest go to a temporary sibling directory that is renamed into
  place only when complete, so an interrupted build leaves no half-written entry.
* Loads are validated: the manifest must parse and match the request, every array file must exist
  with the recorded shape/dtype and file size, and (``verify="full"``, the default for entries up
  to ``FULL_VERIFY_BYTES``) its sha256 must match. A bad entry raises :class:`CacheError` when
  ``on_corrupt="raise"``; by default it is reported with a warning, removed and rebuilt.
* :func:`progress` wraps tqdm for slow generators (disable with ``LONGSEQ_PROGRESS=0``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .base import Split

FORMAT_VERSION = 1
FULL_VERIFY_BYTES = 1 << 30  # entries larger than this are checked by size only unless verify="full"
MANIFEST = "manifest.json"


class CacheError(RuntimeError):
    """A cache entry is missing, corrupt, or does not match the request."""


def data_dir() -> Path:
    """Root of the data cache: ``$LONGSEQ_DATA``, else ``$XDG_CACHE_HOME/longseq``, else ``~/.cache/longseq``."""
    env = os.environ.get("LONGSEQ_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "longseq"


def source_fingerprint(*paths: str | os.PathLike) -> str:
    """sha256 over the bytes of the given files (e.g. a generator's ``__file__``): part of the key,
    so editing a generator invalidates its cached data."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def entry_key(name: str, preset: str, seed: int, cfg: dict, source: str = "") -> str:
    blob = _canonical(
        {"name": name, "preset": preset, "seed": seed, "config": cfg, "source": source, "format": FORMAT_VERSION}
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entry_path(name: str, preset: str, seed: int, cfg: dict, source: str = "") -> Path:
    return data_dir() / name / f"{preset}-seed{seed}-{entry_key(name, preset, seed, cfg, source)}"


def _sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _write_entry(tmp: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    info = {}
    for key, arr in arrays.items():
        if not key.replace("_", "").isalnum():
            raise ValueError(f"array name {key!r} must be alphanumeric/underscore")
        arr = np.ascontiguousarray(arr)
        if arr.dtype == object:
            raise ValueError(f"array {key!r} has dtype object; only plain numeric arrays can be cached")
        path = tmp / f"{key}.npy"
        np.save(path, arr, allow_pickle=False)
        info[key] = {
            "shape": list(arr.shape),
            "dtype": arr.dtype.str,
            "bytes": path.stat().st_size,
            "sha256": _sha256_file(path),
        }
    manifest = dict(manifest, arrays=info, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    with open(tmp / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


def load_entry(path: Path, expect: dict | None = None, verify: str = "auto") -> dict[str, np.ndarray]:
    """Validate and memory-map one cache entry; raises :class:`CacheError` on any mismatch.

    ``verify``: ``"full"`` (sha256 of every file), ``"size"`` (shapes, dtypes, file sizes) or
    ``"auto"`` (full up to ``FULL_VERIFY_BYTES`` in total, else size)."""
    if verify not in ("auto", "full", "size"):
        raise ValueError(f"verify must be 'auto', 'full' or 'size', got {verify!r}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        info = manifest["arrays"]
    except FileNotFoundError as e:
        raise CacheError(f"{path}: no manifest") from e
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{path}: unreadable manifest ({e})") from e
    for k, v in (expect or {}).items():
        if _canonical(manifest.get(k)) != _canonical(v):
            raise CacheError(f"{path}: manifest {k}={manifest.get(k)!r} does not match the request {v!r}")
    total = sum(int(a["bytes"]) for a in info.values())
    full = verify == "full" or (verify == "auto" and total <= FULL_VERIFY_BYTES)
    out = {}
    for key, a in info.items():
        file = path / f"{key}.npy"
        if not file.is_file():
            raise CacheError(f"{path}: array file {file.name} is missing")
        if file.stat().st_size != a["bytes"]:
            raise CacheError(
                f"{path}: {file.name} has {file.stat().st_size} bytes, manifest says {a['bytes']} (truncated?)"
            )
        if full and _sha256_file(file) != a["sha256"]:
            raise CacheError(f"{path}: {file.name} fails its sha256 check (corrupt)")
        try:
            arr = np.load(file, mmap_mode="c", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise CacheError(f"{path}: cannot load {file.name} ({e})") from e
        if list(arr.shape) != a["shape"] or arr.dtype.str != a["dtype"]:
            raise CacheError(
                f"{path}: {file.name} is {arr.dtype.str}{list(arr.shape)}, manifest says {a['dtype']}{a['shape']}"
            )
        out[key] = arr
    return out


def cached(
    name: str,
    preset: str,
    seed: int,
    cfg: dict,
    build_fn: Callable[[], dict[str, np.ndarray]],
    *,
    source: str = "",
    on_corrupt: str = "rebuild",
    verify: str = "auto",
    enabled: bool = True,
) -> dict[str, np.ndarray]:
    """Load the arrays for (name, preset, seed, cfg, source) from the cache, building and storing
    them with ``build_fn()`` on a miss. Returns ``{array name: read-only np.memmap}``.

    ``on_corrupt``: ``"rebuild"`` (warn, delete, rebuild) or ``"raise"`` (raise :class:`CacheError`).
    ``enabled=False`` skips the disk entirely and returns ``build_fn()`` (for tiny configs)."""
    if on_corrupt not in ("rebuild", "raise"):
        raise ValueError(f"on_corrupt must be 'rebuild' or 'raise', got {on_corrupt!r}")
    if not enabled:
        return build_fn()
    path = entry_path(name, preset, seed, cfg, source)
    expect = {"task": name, "preset": preset, "seed": seed, "config": cfg, "source": source, "format": FORMAT_VERSION}
    if path.exists():
        try:
            return load_entry(path, expect, verify)
        except CacheError as e:
            if on_corrupt == "raise":
                raise
            warnings.warn(f"longseq data cache: {e}; rebuilding", RuntimeWarning, stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
    arrays = build_fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        _write_entry(tmp, dict(expect, sizes={k: list(np.shape(v)) for k, v in arrays.items()}), arrays)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.exists():  # a concurrent builder won the race: keep its entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_entry(path, expect, verify="size")


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm progress bar for slow generators; silent when ``LONGSEQ_PROGRESS=0``."""
    from tqdm.auto import tqdm

    disable = os.environ.get("LONGSEQ_PROGRESS", "1") in ("0", "false", "no", "off")
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


class CompactSplit(Split):
    """A split stored compactly (e.g. uint8 tokens memory-mapped from the cache), widened to int64
    per batch. ``lengths`` (optional, ``[N]``) marks right-padded variable-length inputs: the batch
    then carries ``mask[i, t] = t < lengths[i]``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor | None = None):
        super().__init__(inputs, targets, None)
        self.lengths = lengths

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], split: str) -> "CompactSplit":
        """Wrap ``arrays[f"{split}_inputs"]``, ``..._targets`` and optional ``..._lengths`` without copying."""

        def get(key):
            a = arrays.get(f"{split}_{key}")
            return None if a is None else torch.from_numpy(a)

        return cls(get("inputs"), get("targets"), get("lengths"))

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        out = {"inputs": self.inputs[index].long(), "targets": self.targets[index].long()}
        if self.lengths is not None:
            L = self.inputs.shape[1]
            out["mask"] = torch.arange(L)[None, :] < self.lengths[index].long()[:, None]
        return out

    def fingerprint(self, n: int = 16) -> str:
        b = self.batch(torch.arange(min(n, len(self))))
        h = hashlib.sha256()
        for k in ("inputs", "targets", "mask"):
            if k in b:
                h.update(np.ascontiguousarray(b[k].numpy()).tobytes())
        return h.hexdigest()
