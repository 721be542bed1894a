"""Offline, seeded tasks: ``names()``, ``build(name, preset=..., seed=..., **overrides)``, and
``stats(task)`` (sizes, class balance, lengths)."""

from .base import IGNORE, Split, Task, TaskMeta, build, names, register_task, resolve_preset
from .stats import stats  # noqa: E402  (the function shadows the submodule name on purpose)

__all__ = ["IGNORE", "Split", "Task", "TaskMeta", "build", "names", "register_task", "resolve_preset", "stats"]
