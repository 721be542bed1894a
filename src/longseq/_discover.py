"""Plugin discovery shared by the mixer and task registries."""

from __future__ import annotations

import importlib
import pkgutil

_DONE: set[str] = set()


def import_submodules(package: str) -> None:
    """Import every module of ``package`` once (``base`` and private modules excepted), so that
    their registration decorators run. Marked done before importing: a module that queries the
    registry while it is imported does not start the discovery again."""
    if package in _DONE:
        return
    _DONE.add(package)
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{package}.{info.name}")
