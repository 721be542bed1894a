"""Build the model a task calls for, from the task's preset defaults and user overrides."""

from __future__ import annotations

from typing import Any

from ..models import CausalLM, MaskedLM, SequenceClassifier, preset_config
from ..tasks.base import Task


def build_model(task: Task, mixer=None, *, model_preset: str | None = None, model_preset_options: dict | None = None,
                **overrides: Any):
    """``SequenceClassifier`` for classification tasks, ``CausalLM`` for LM tasks, ``MaskedLM`` for
    MLM tasks.

    ``overrides`` (d_model, n_layers, num_heads, mixer_options, position, ...) replace the preset's
    ``task.model_defaults``. ``model_preset`` (``spade``, ``h3_hybrid``, ``anthe``:
    :mod:`longseq.models.presets`) applies a named configuration on top of the task defaults: its
    mixer stack unless ``mixer`` is given, and its other settings unless ``overrides`` set them.
    ``mixer`` defaults to ``softmax``."""
    user = {k: v for k, v in overrides.items() if v is not None}
    cfg = {**task.model_defaults, **user}
    if model_preset is not None:
        preset = preset_config(model_preset, cfg.get("n_layers", 2), **(model_preset_options or {}))
        preset_mixer = preset.pop("mixer")
        mixer = preset_mixer if mixer is None else mixer
        cfg = {**task.model_defaults, **preset, **user}
    mixer = "softmax" if mixer is None else mixer
    if (cfg.get("embedding") == "patches" and (cfg.get("embedding_options") or {}).get("cls_token", True)
            and "pooling" not in user):
        cfg["pooling"] = "first"  # ViT: classify from the class token
    if cfg.get("position") == "rope" and "position" not in user and not _any_rope(mixer, cfg.get("mixer_options")):
        cfg["position"] = "none"  # a preset's RoPE default does not apply to stacks without attention (SSMs)
    m = task.meta
    if cfg.get("position") in ("learned", "deberta", "diet_abs", "diet_rel") and not cfg.get("max_len"):
        cfg["max_len"] = m.seq_len  # the table covers the task's longest input (relative ones: clip at it)
    if m.kind == "classification":
        cfg.setdefault("pair", bool(m.extra.get("pair", False)))
        cfg.pop("tie_embeddings", None)
        return SequenceClassifier(m.vocab_size, m.num_classes, mixer=mixer, **cfg)
    cfg.pop("pooling", None)
    cfg.pop("pair", None)
    if m.kind == "mlm":               # masked LM (longseq.tasks.mlm): a bidirectional stack, tied head
        cfg.pop("tie_embeddings", None)
        return MaskedLM(m.vocab_size, mixer=mixer, **cfg)
    return CausalLM(m.vocab_size, mixer=mixer, **cfg)


def _any_rope(mixer, mixer_options) -> bool:
    from .. import mixers

    entries = mixer if isinstance(mixer, (list, tuple)) else [mixer]
    names = [e if isinstance(e, str) else e.get("name") for e in entries]
    return any("rope" in mixers.spec(n).cls.options() for n in names)
