"""Tasks: a registry of seeded, offline datasets with train/validation/test splits.

A task builder is a function registered with :func:`register_task`; ``build(name, preset=...,
seed=..., **overrides)`` returns a :class:`Task`. Data flows one way: a task yields batches
(:meth:`Split.batch`), the trainer feeds them to a model.

Batches are dicts of tensors:
* ``inputs``  int64 ``[B, L]`` token ids;
* ``targets`` int64: ``[B]`` class ids (kind ``classification``) or ``[B, L]`` next-token ids with
  ``IGNORE`` (-100) where no loss is taken (kind ``lm``), or ``[B, L]`` original ids at the masked
  positions and ``IGNORE`` elsewhere (kind ``mlm``: :mod:`longseq.tasks.mlm`);
* ``mask``    optional bool ``[B, L]``, True = real token (padded variable-length inputs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .._discover import import_submodules

IGNORE = -100
KINDS = ("classification", "lm", "mlm")


@dataclass
class Split:
    """One split held as tensors; subclasses may generate batches lazily (e.g. LM windows)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"inputs": self.inputs[index], "targets": self.targets[index]}
        if self.mask is not None:
            out["mask"] = self.mask[index]
        return out

    def fingerprint(self, n: int = 16) -> str:
        """sha256 of the first ``n`` examples: two builds with one seed must agree."""
        h = hashlib.sha256()
        for t in (self.inputs[:n], self.targets[:n]) + ((self.mask[:n],) if self.mask is not None else ()):
            h.update(np.ascontiguousarray(t.numpy()).tobytes())
        return h.hexdigest()


@dataclass
class TaskMeta:
    name: str
    kind: str                    # "classification" | "lm" | "mlm"
    vocab_size: int
    seq_len: int                 # longest input length
    num_classes: int | None = None
    metric: str = "accuracy"     # "accuracy" | "bpb" (bits per byte) ...
    preset: str = "quick"
    seed: int = 0
    pad_id: int = 0
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    meta: TaskMeta
    train: Split
    validation: Split
    test: Split
    # Preset hyperparameters: model keyword arguments (d_model, n_layers, ...) and trainer ones
    # (steps, batch_size, lr, ...). Users override either.
    model_defaults: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(name: str):
    def deco(fn):
        if name in _TASKS and _TASKS[name] is not fn:
            raise ValueError(f"task name {name!r} is already registered")
        _TASKS[name] = fn
        return fn

    return deco


def _discover() -> None:
    """Import every module of ``longseq.tasks`` once, so their @register_task decorators run."""
    import_submodules("longseq.tasks")


def names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def build(name: str, **cfg) -> Task:
    """``build("mqar", preset="quick", seed=0, **overrides)``."""
    _discover()
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(sorted(_TASKS))}")
    task = _TASKS[name](**cfg)
    if task.meta.kind not in KINDS:
        raise ValueError(f"task {name!r} declares unknown kind {task.meta.kind!r}")
    return task


def resolve_preset(name: str, presets: dict[str, dict], preset: str, overrides: dict) -> dict:
    """Merge a named preset with user overrides; unknown preset or key -> ValueError."""
    if preset not in presets:
        raise ValueError(f"task {name!r} has no preset {preset!r}; presets: {', '.join(presets)}")
    cfg = dict(presets[preset])
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"task {name!r} got unknown setting(s) {unknown}; settings: {', '.join(cfg)}")
    cfg.update(overrides)
    return cfg
