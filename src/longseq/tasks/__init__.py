"""Offline, seeded tasks: ``names()``, ``build(name, preset=..., seed=..., **overrides)``."""

from .base import IGNORE, Split, Task, TaskMeta, build, names, register_task, resolve_preset

__all__ = ["IGNORE", "Split", "Task", "TaskMeta", "build", "names", "register_task", "resolve_preset"]
