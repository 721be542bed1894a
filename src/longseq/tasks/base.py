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

Kind ``parsing`` (``pcfg_synth``, ``lcfrs_synth``; :mod:`longseq.tasks.treebank`): ``targets`` are
next-word ids as for ``lm``, batches also carry ``lengths [B]``, and the split's
``trees(index)`` gives the gold constituents (``longseq.trees`` tuples).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .._discover import import_submodules
from ..utils.constants import IGNORE as IGNORE  # re-exported: the tasks produce it

KINDS = ("classification", "lm", "regression", "parsing", "mlm")


@dataclass
class Split(torch.utils.data.Dataset):
    """One split held as tensors; subclasses may generate batches lazily (e.g. LM windows).

    A split is a map-style ``torch.utils.data.Dataset``: ``split[i]`` is example ``i`` as a dict of
    tensors (``split.batch([i])`` without its batch dimension), so ``DataLoader(split, batch_size=B)``
    gives the batches ``split.batch(index)`` gives, collated by PyTorch's default collate. A split
    whose batches carry ``mask`` only when some position is padding (:class:`longseq.tasks.mlm.MaskedSplit`)
    sets ``item_mask = True``: its examples always carry a (possibly all-True) ``mask``, so every
    example has the same keys and collates.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None = None
    # examples always carry ``mask`` (all True where the batch would omit it); see the docstring
    item_mask = False

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if isinstance(i, torch.Tensor):
            i = i.item() if i.numel() == 1 and not i.is_floating_point() else i
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"a split is indexed by one int example index, got {type(i).__name__}; use batch(index)")
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"example index {i} out of range for a split of {n} examples")
        b = self.batch(torch.tensor([int(i) % n]))
        item = {k: v[0] for k, v in b.items()}
        if self.item_mask and "mask" not in item:
            item["mask"] = torch.ones(item["inputs"].shape, dtype=torch.bool)
        return item

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
    kind: str  # one of KINDS: "classification" | "lm" | "regression" | "parsing" | "mlm"
    vocab_size: int
    seq_len: int  # longest input length
    num_classes: int | None = None
    metric: str = "accuracy"  # "accuracy" | "bpb" (bits per byte) ...
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
    for k, v in overrides.items():
        check_setting(name, k, v, cfg[k])
    cfg.update(overrides)
    return cfg


def check_setting(task: str, key: str, value: Any, default: Any) -> None:
    """A task setting must have its preset value's type (bool, int, float, str; a None default or
    value is left to the builder, which checks it itself); integer settings the preset sets positive (sizes, counts,
    lengths) must stay positive; floats must be finite."""

    def bad(what: str) -> ValueError:
        return ValueError(f"task {task!r} setting {key} must be {what}, got {value!r}")

    if default is None or value is None:  # None: "unset" / "no limit", the builder decides
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if default > 0 and value < 1:
            raise bad("a positive integer")
        if value < 0:
            raise bad("an integer >= 0")
    elif isinstance(default, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value != value
            or value in (float("inf"), float("-inf"))
        ):
            raise bad("a finite number")
        if default >= 0 and value < 0:
            raise bad("a number >= 0")
    elif isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
