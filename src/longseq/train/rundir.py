"""Run-directory integrity: identity, locking, verified checkpoints, repair and clear I/O errors.

A run directory (``longseq train --out DIR``, each arena run, ``longseq demo``) belongs to one run:

* **Identity.** ``config.json`` holds the run's resolved configuration (task with its data
  fingerprint, model config, trainer config, code version), written when the run starts. A resume
  compares the current settings with it (:func:`identity_diff`) and refuses any difference except
  the settings named in ``allow_changes`` (only those in :data:`CHANGEABLE`: step counts and
  evaluation / logging / checkpoint cadence) and the ones that cannot change the results
  (:data:`IGNORED`: threads, device, progress bar, distributed world size and timeout, code
  version — a changed code version only warns).
* **One writer.** :class:`DirLock` creates ``DIR/.lock`` (pid, host, process start time) with a
  hard link, which fails when the file exists, so a second writer fails at once. A lock whose
  process is gone (same host, pid dead or reused by a process with another start time) is stale:
  it is removed with a warning.
* **New runs** into a directory holding another run's files are refused unless ``overwrite``
  (then exactly the trainer's files are removed, nothing else).
* **Checkpoints** end with a trailer holding the sha256 of the ``torch.save`` bytes before it,
  verified on load before anything is unpickled, so any flipped byte is a clear error, not
  silently loaded weights. Zip readers ignore trailing bytes: the file still opens with
  ``torch.load(..., weights_only=True)`` as a plain dict. Checkpoints written before the trailer
  (no ``"format"`` key) still load, unchecked.
* **Temp files** (``.NAME.XXXX.tmp``, from :func:`longseq.models.base.atomic_write` killed before
  its rename) are removed at start-up, once the lock is held.
* **metrics.jsonl** whose last line was cut by a kill is repaired (truncated at the last complete
  record) with a warning naming the file; damage before the last line is an error naming the line.
* **I/O errors** (disk full, permission, read-only file system, a file where a directory is
  expected) become :class:`StorageError`: one sentence naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch

from .._version import __version__
from ..utils.io import StorageError, atomic_write, describe_os_error, storage  # noqa: F401  (re-exported)

LOCK_FILE = ".lock"
CONFIG, METRICS, CHECKPOINT, FINAL, MODEL_DIR = "config.json", "metrics.jsonl", "checkpoint.pt", "final.json", "model"
TRAINER_FILES = (CONFIG, METRICS, CHECKPOINT, FINAL, MODEL_DIR)

# Settings a resume may change when named in ``allow_changes`` (``--allow-change steps,...``):
# they change how long the run goes on and how often it reports, not what one step computes
# (``steps`` also stretches the cosine schedule from the resumed step on).
CHANGEABLE = ("steps", "eval_every", "log_every", "checkpoint_every", "eval_batch_size", "eval_max_batches")
# Keys of the identity that never make a difference to the results (or are expected to change).
# ``train.fsdp`` and ``distributed``: a checkpoint resumes under any number of processes and either
# strategy; ``cli`` / ``arena``: the caller's labels, whose content the task and model records hold.
IGNORED = (
    "train.threads",
    "train.device",
    "train.progress",
    "train.dist_timeout",
    "train.fsdp",
    "distributed",
    "code_version",
    "created",
    "resumed",
    "cli",
    "arena",
)

# Sections compared only when both records have them: ``task_options`` (the CLI's ``--task-option``
# values; the Python API passes a built task, whose meta and data fingerprints are compared anyway).
BOTH_OR_NEITHER = ("task_options",)


class RunDirError(ValueError):
    """A refused operation on a run directory (mismatching resume, another run's directory, locked)."""


# ---------------------------------------------------------------------------- lock
def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DirLock:
    """``DIR/.lock`` held while a process writes ``DIR``; a second writer gets :class:`RunDirError` at once.

    Use as a context manager, or :meth:`acquire` / :meth:`release`."""

    def __init__(self, directory: str | os.PathLike, what: str = "run"):
        self.dir, self.what = Path(directory), what
        self.path = self.dir / LOCK_FILE
        self.held = False

    def _record(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start": _proc_start(os.getpid()),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _stale(self, info: dict | None) -> str | None:
        """Why the lock held by ``info`` is stale, or None if its process may still be writing."""
        if info is None:
            age = time.time() - self.path.stat().st_mtime if self.path.exists() else 0.0
            return "it is unreadable" if age > 5 else None
        if info.get("host") != socket.gethostname():
            return None
        pid = int(info.get("pid", -1))
        if pid <= 0 or not _alive(pid):
            return f"process {pid} is gone"
        start = _proc_start(pid)
        if info.get("start") is not None and start is not None and start != info["start"]:
            return f"process id {pid} now belongs to another process"
        return None

    def acquire(self) -> "DirLock":
        with storage(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            tmp = self.dir / f".lock.{os.getpid()}.{time.monotonic_ns()}.tmp"
            with storage(self.path):
                tmp.write_text(json.dumps(self._record()))
                try:
                    os.link(tmp, self.path)  # atomic: fails if the lock exists
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            try:
                info = json.loads(self.path.read_text())
            except FileNotFoundError:
                continue  # released meanwhile: try again
            except (OSError, ValueError):
                info = None
            why = self._stale(info)
            if why is None:
                who = (
                    f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')})"
                    if info
                    else "another process"
                )
                raise RunDirError(
                    f"{self.dir} is in use by {who}: two {self.what}s cannot write one directory; "
                    f"wait for it to finish or choose another --out (if no process is writing there, "
                    f"delete {self.path})"
                )
            warnings.warn(f"removed the stale lock {self.path} ({why})", RuntimeWarning, stacklevel=2)
            self.path.unlink(missing_ok=True)
        raise RunDirError(f"could not take the lock {self.path}: it keeps reappearing")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------- start-up
def clean_temp_files(directory: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temp files interrupted atomic writes left (``.NAME.XXXX.tmp``); call with the lock held."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [p for p in (d.rglob(".*.tmp") if recursive else d.glob(".*.tmp")) if p.is_file()]
    size = 0
    for p in found:
        try:
            size += p.stat().st_size
            p.unlink()
        except OSError:
            pass
    if found:
        warnings.warn(
            f"removed {len(found)} temp file(s) of interrupted writes ({size / 1e6:.1f} MB) in {d}",
            RuntimeWarning,
            stacklevel=2,
        )
    return found


def existing_run_files(directory: str | os.PathLike) -> list[str]:
    d = Path(directory)
    return [f for f in TRAINER_FILES if (d / f).exists()]


def check_out_dir(directory: str | os.PathLike, *, resume: bool, overwrite: bool) -> None:
    """Refuse what would clobber: ``--out`` that is a file; a new run into another run's directory
    (unless ``overwrite``); ``resume`` together with ``overwrite``. Cheap: call before any work."""
    d = Path(directory)
    if resume and overwrite:
        raise RunDirError(
            f"--resume and --overwrite contradict each other: resume continues the run in {d}, overwrite replaces it"
        )
    for parent in (d, *d.parents):
        if parent.exists():
            if not parent.is_dir():
                raise StorageError(errno.ENOTDIR, f"cannot write {d}: {parent} is a file, not a directory", str(d))
            break
    if not resume and not overwrite and d.is_dir():
        files = existing_run_files(d)
        if files:
            raise RunDirError(
                f"{d} already holds a run ({', '.join(files)}); continue it with --resume, "
                "replace it with --overwrite, or choose another --out"
            )


def clear_run(directory: str | os.PathLike) -> None:
    """Remove the trainer's files from ``directory`` (``--overwrite``); other files are kept."""
    d = Path(directory)
    with storage(d):
        for f in TRAINER_FILES:
            p = d / f
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()


# ---------------------------------------------------------------------------- identity
def code_version() -> str:
    return __version__


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples -> lists, non-JSON values -> str)."""
    return json.loads(json.dumps(obj, default=str))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"layers": [{"mixer": "s4d"}]}}`` -> ``{"model.layers[0].mixer": "s4d"}``: differences
    are reported at the deepest setting (lists of dicts, the model's layers, are walked too)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            out[f"{key}.length"] = len(v)
            for i, e in enumerate(v):
                out.update(flatten(e, f"{key}[{i}]."))
        else:
            out[key] = v
    return out


def identity_diff(stored: dict, current: dict, allow_changes: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: lines ``key: stored -> current`` for every differing setting.

    Keys under :data:`IGNORED` are skipped; ``train.K`` for K in ``allow_changes`` goes to ``allowed``."""
    stored, current = jsonable(stored), jsonable(current)
    for k in BOTH_OR_NEITHER:  # sections only some callers record (the CLI's task options)
        if (k in stored) != (k in current):
            stored.pop(k, None)
            current.pop(k, None)
    a, b = flatten(stored), flatten(current)
    ok = {f"train.{k}" for k in allow_changes}
    refused, allowed = [], []
    for key in sorted(set(a) | set(b)):
        if any(key == i or key.startswith(i + ".") for i in IGNORED):
            continue
        va, vb = a.get(key, "(not set)"), b.get(key, "(not set)")
        if va != vb:
            (allowed if key in ok else refused).append(f"{key}: {va!r} -> {vb!r}")
    return refused, allowed


def check_allow_changes(names: Iterable[str]) -> list[str]:
    names = [n.strip().replace("-", "_") for n in names if n.strip()]
    bad = sorted(set(names) - set(CHANGEABLE))
    if bad:
        raise ValueError(
            f"--allow-change: {', '.join(bad)} cannot change on resume; changeable settings: {', '.join(CHANGEABLE)}"
        )
    return names


def read_identity(directory: str | os.PathLike) -> dict | None:
    p = Path(directory) / CONFIG
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{p} is damaged ({type(e).__name__}: {e}); the run's identity cannot be checked") from None


def write_json(path: Path, obj: Any) -> None:
    with storage(path):
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=str)))


# ---------------------------------------------------------------------------- checkpoints
CHECKPOINT_FORMAT = "longseq.checkpoint/2"
_TRAILER = b"\nlongseq-sha256:"  # + 64 hex digits + b"\n" after the zip that torch.save wrote


def _dump(obj: dict, tmp: str) -> None:
    """``torch.save(obj)`` followed by the trailer with the sha256 of those bytes (zip readers,
    ``torch.load`` included, ignore bytes after the archive)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with open(tmp, "wb") as f:
        f.write(data + _TRAILER + hashlib.sha256(data).hexdigest().encode() + b"\n")


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> None:
    """Write ``ckpt`` atomically, marked ``format`` = :data:`CHECKPOINT_FORMAT`, with the checksum trailer."""
    path = Path(path)
    with storage(path):
        atomic_write(path, lambda tmp: _dump({**ckpt, "format": CHECKPOINT_FORMAT}, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint; ``ValueError`` naming the file when it is corrupt or fails its checksum.
    Checkpoints written before the checksum was added load unchecked."""
    path = Path(path)
    with storage(path):
        raw = path.read_bytes()
    data, expected = raw, None
    cut = raw.rfind(_TRAILER)
    if cut >= 0 and len(raw) - cut == len(_TRAILER) + 65:
        data, expected = raw[:cut], raw[cut + len(_TRAILER) : -1].decode("ascii", "replace")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickled code...
        raise ValueError(
            f"checkpoint {path} is corrupt or not a longseq checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not (isinstance(ckpt, dict) and "model" in ckpt and "step" in ckpt):
        raise ValueError(f"checkpoint {path} is corrupt or not a longseq checkpoint (unexpected content)")
    if ckpt.get("format") == CHECKPOINT_FORMAT or expected is not None:
        actual = hashlib.sha256(data).hexdigest()
        if expected is None:
            raise ValueError(f"checkpoint {path} is corrupt: its sha256 trailer is missing or damaged")
        if actual != expected:
            raise ValueError(
                f"checkpoint {path} is corrupt: its content does not match the recorded sha256 "
                f"(expected {expected[:12]}…, found {actual[:12]}…); delete it to restart the run, "
                "or restore it from a copy"
            )
    ckpt.pop("format", None)
    return ckpt


# ---------------------------------------------------------------------------- metrics
def read_metrics(path: str | os.PathLike, repair: bool = True) -> list[dict]:
    """The records of ``metrics.jsonl``. A damaged *last* line (a write cut by a kill) is dropped and,
    with ``repair``, the file is rewritten without it, with a warning naming the file; a damaged
    earlier line is a ``ValueError`` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    with storage(path):
        raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    records, damaged = [], None
    for i, ln in enumerate(lines):
        try:
            rec = json.loads(ln) if ln.strip() else None
            if rec is not None and not (isinstance(rec, dict) and "step" in rec):
                raise ValueError("not a metrics record")
        except ValueError as e:
            if i == len(lines) - 1:
                damaged = ln
                break
            raise ValueError(
                f"{path} is damaged at line {i + 1} ({e}); only a damaged last line can be repaired"
            ) from None
        if rec is not None:
            records.append(rec)
    if damaged is not None or (raw and not raw.endswith(b"\n")):
        if damaged is not None:
            warnings.warn(
                f"{path}: damaged last line ({len(damaged)} bytes) removed: the file is truncated at the "
                f"last complete record (step {records[-1]['step'] if records else 0})",
                RuntimeWarning,
                stacklevel=2,
            )
        if repair:
            write_metrics(path, records)
    return records


def write_metrics(path: Path, records: list[dict]) -> None:
    with storage(path):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in records)))


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
