"""The arena's on-disk records: the schema tag, the per-run record file and JSON read/write
(atomic). Shared by :mod:`.runner` (writes runs) and :mod:`.report` (reads them); it imports
neither, so the two do not import each other in a cycle."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.io import atomic_write

SCHEMA = "longseq.arena/1"
RUN_RECORD = "arena.json"


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=str)))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
