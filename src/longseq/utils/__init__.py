"""The lowest layer of longseq: I/O helpers (:mod:`.io`), shared constants (:mod:`.constants`) and
option validation (:mod:`.validate`). It imports nothing else from longseq."""

from .constants import IGNORE
from .io import atomic_write, sha256_file
from .validate import check_bool, check_choice, check_int, check_number, check_optional, check_probability

__all__ = [
    "IGNORE",
    "atomic_write",
    "sha256_file",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_optional",
    "check_probability",
]
