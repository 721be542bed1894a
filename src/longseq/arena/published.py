"""Published reference accuracies (LRA, S4, S4D, S5, Mega, H3 tables) from ``published.json``,
the one data file the arena reads them from (package data, loaded with importlib.resources)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def _load_text() -> str:
    return resources.files("longseq.arena").joinpath("published.json").read_text(encoding="utf-8")


def load_published() -> dict[str, Any]:
    """``{"note", "tasks": {task: {benchmark, same_data, note}}, "sources": {key: citation},
    "models": [{"model", "mixer", "source", "results": {task: % or "FAIL"}}]}`` (a fresh copy)."""
    return json.loads(_load_text())


def published_score(models: list[dict], mixer: str, task: str) -> float | str | None:
    """The first published result for ``task`` of a model that maps to ``mixer`` (None if none)."""
    for m in models:
        if m.get("mixer") == mixer and task in m["results"]:
            return m["results"][task]
    return None
