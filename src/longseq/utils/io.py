"""File-writing helpers shared by models, the trainer, the benchmarks and the arena."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (same directory, so atomic).

    The file gets the permissions of any file the user creates (``mkstemp`` makes 0600 files)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class StorageError(OSError):
    """An I/O error while reading or writing a run directory, as one sentence naming the path."""

    def __str__(self) -> str:  # OSError's default adds "[Errno N]"
        return self.strerror or super().__str__()


_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a path component is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.EEXIST: "a file is in the way",
}


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> str:
    """One sentence for an OSError: what failed and where."""
    if isinstance(e, StorageError):
        return str(e)
    where = path if path is not None else (e.filename or "")
    reason = _REASONS.get(e.errno) or (e.strerror or str(e)).rstrip(".").lower()
    return f"cannot write {where}: {reason}" if where else f"I/O error: {reason}"


@contextmanager
def storage(path: str | os.PathLike):
    """Turn OS errors (and torch's "file write failed") raised inside into a :class:`StorageError` naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        if isinstance(e, FileNotFoundError) and e.errno is None:
            raise
        raise StorageError(e.errno or errno.EIO, describe_os_error(e, path), str(path)) from None
    except RuntimeError as e:  # torch.save's C++ writer: "PytorchStreamWriter failed writing file ..."
        msg = str(e)
        if "write" in msg.lower() and "fail" in msg.lower():
            raise StorageError(
                errno.EIO, f"cannot write {path}: the write failed (disk full?): {msg.splitlines()[0]}", str(path)
            ) from None
        raise
