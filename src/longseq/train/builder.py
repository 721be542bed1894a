"""Build the model a task calls for, from the task's preset defaults and user overrides."""

from __future__ import annotations

from typing import Any

from ..models import CausalLM, SequenceClassifier
from ..tasks.base import Task


def build_model(task: Task, mixer="softmax", **overrides: Any):
    """``SequenceClassifier`` for classification tasks, ``CausalLM`` for LM tasks.

    ``overrides`` (d_model, n_layers, num_heads, mixer_options, position, ...) replace the preset's
    ``task.model_defaults``."""
    user = {k: v for k, v in overrides.items() if v is not None}
    cfg = {**task.model_defaults, **user}
    if cfg.get("position") == "rope" and "position" not in user and not _any_rope(mixer, cfg.get("mixer_options")):
        cfg["position"] = "none"  # a preset's RoPE default does not apply to stacks without attention (SSMs)
    m = task.meta
    if cfg.get("position") in ("learned", "deberta", "diet_abs", "diet_rel") and not cfg.get("max_len"):
        cfg["max_len"] = m.seq_len  # the table covers the task's longest input (relative ones: clip at it)
    if m.kind == "classification":
        cfg.setdefault("pair", bool(m.extra.get("pair", False)))
        return SequenceClassifier(m.vocab_size, m.num_classes, mixer=mixer, **cfg)
    cfg.pop("pooling", None)
    cfg.pop("pair", None)
    return CausalLM(m.vocab_size, mixer=mixer, **cfg)


def _any_rope(mixer, mixer_options) -> bool:
    from .. import mixers

    entries = mixer if isinstance(mixer, (list, tuple)) else [mixer]
    names = [e if isinstance(e, str) else e.get("name") for e in entries]
    return any("rope" in mixers.spec(n).cls.options() for n in names)
