"""Build the model a task calls for, from the task's preset defaults and user overrides."""

from __future__ import annotations

from typing import Any

from ..models import MaskedLM, ModelConfig, preset_config
from ..models.config import resolve_layers
from ..operators import OPERATORS, build_operator
from ..tasks.base import Task


def build_model(
    task: Task,
    mixer=None,
    *,
    model_preset: str | None = None,
    model_preset_options: dict | None = None,
    **overrides: Any,
):
    """``SequenceClassifier`` for classification tasks, ``CausalLM`` for LM tasks (both built from the
    :class:`~longseq.models.ModelConfig` of the task's defaults and the overrides), ``MaskedLM`` for MLM tasks.

    ``overrides`` (d_model, n_layers, num_heads, mixer_options, position, ...) replace the preset's
    ``task.model_defaults``. ``model_preset`` (``spade``, ``h3_hybrid``, ``anthe``:
    :mod:`longseq.models.presets`) applies a named configuration on top of the task defaults: its
    mixer stack unless ``mixer`` is given, and its other settings unless ``overrides`` set them.
    ``mixer`` defaults to ``softmax``."""
    user = {k: v for k, v in overrides.items() if v is not None}
    if task.meta.kind == "regression":
        if model_preset is not None:
            raise ValueError(f"--model-preset does not apply to the operator-learning task {task.meta.name!r}")
        return build_operator_model(task, mixer, **user)
    cfg = {**task.model_defaults, **user}
    if model_preset is not None:
        preset = preset_config(model_preset, cfg.get("n_layers", 2), **(model_preset_options or {}))
        preset_mixer = preset.pop("mixer")
        mixer = preset_mixer if mixer is None else mixer
        cfg = {**task.model_defaults, **preset, **user}
    mixer = "softmax" if mixer is None else mixer
    if isinstance(mixer, (list, tuple)) and "n_layers" not in user:
        cfg["n_layers"] = len(mixer)  # a per-layer stack sets the depth (an explicit n_layers must match)
    if (
        cfg.get("embedding") == "patches"
        and (cfg.get("embedding_options") or {}).get("cls_token", True)
        and "pooling" not in user
    ):
        cfg["pooling"] = "first"  # ViT: classify from the class token
    if cfg.get("position") == "rope" and "position" not in user and not _any_rope(mixer, cfg.get("mixer_options")):
        cfg["position"] = "none"  # a preset's RoPE default does not apply to stacks without attention (SSMs)
    m = task.meta
    if m.kind == "parsing":
        raise ValueError(
            f"task {m.name!r} is a parsing task (gold trees, F1): train a structured model "
            "(longseq.structured.PCFG / LCFRS2, scripts/train_structured.py), not a mixer model"
        )
    if cfg.get("position") in ("learned", "deberta", "diet_abs", "diet_rel") and not cfg.get("max_len"):
        cfg["max_len"] = m.seq_len  # the table covers the task's longest input (relative ones: clip at it)
    if m.kind == "mlm":  # masked LM (longseq.tasks.mlm): a bidirectional stack, tied head
        for k in ("pooling", "pair", "tie_embeddings"):
            cfg.pop(k, None)
        return MaskedLM(m.vocab_size, mixer=mixer, **cfg)
    if m.kind == "classification":
        cfg.setdefault("pair", bool(m.extra.get("pair", False)))
        cfg.pop("tie_embeddings", None)
        config = ModelConfig.from_dict(
            {"vocab_size": m.vocab_size, "num_classes": m.num_classes, "mixer": mixer, **cfg}, kind="classifier"
        )
    else:
        cfg.pop("pooling", None)
        cfg.pop("pair", None)
        config = ModelConfig.from_dict({"vocab_size": m.vocab_size, "mixer": mixer, **cfg}, kind="lm")
    return config.build()


def _any_rope(mixer, mixer_options) -> bool:
    from .. import mixers

    entries = mixer if isinstance(mixer, (list, tuple)) else [mixer]
    names = [s.mixer for s in resolve_layers(list(entries), None)]
    return any("rope" in mixers.spec(n).cls.options() for n in names)


def build_model_from_config(task: Task, config: dict[str, Any]):
    """The model of a :class:`~longseq.models.ModelConfig` dict (``read_model_config``) for ``task``:
    the vocabulary, the number of classes and the model kind come from the task (a config that
    states other values is refused)."""
    m = task.meta
    cfg = dict(config)
    kind = "classifier" if m.kind == "classification" else "lm"
    want = {"vocab_size": m.vocab_size, "kind": kind}
    if kind == "classifier":
        want["num_classes"] = m.num_classes
        cfg.pop("tie_embeddings", None)
    else:
        for k in ("pooling", "pair", "causal", "num_classes"):
            cfg.pop(k, None)
    clash = {k: cfg[k] for k in want if k in cfg and cfg[k] != want[k]}
    if clash:
        raise ValueError(
            f"the model configuration does not fit task {m.name!r}: it has "
            + ", ".join(f"{k}={v!r}" for k, v in clash.items())
            + "; the task needs "
            + ", ".join(f"{k}={want[k]!r}" for k in clash)
        )
    return ModelConfig.from_dict({**cfg, **want}).build()


def build_operator_model(
    task: Task,
    operator=None,
    *,
    d_model: int | None = None,
    n_layers: int | None = None,
    mixer_options: dict | None = None,
    **unused: Any,
):
    """The operator model for a ``regression`` task (:mod:`longseq.operators`): ``operator`` (the CLI's
    ``--mixer``) is ``fno``, ``lowrank`` or ``unet`` (default: the task's); the task's per-operator
    defaults, then ``d_model`` (-> width), ``n_layers`` and ``mixer_options`` (modes, rank, padding, ...).
    Tasks that declare ``normalize`` pass the training set's scalar mean/std to the model."""
    bad = sorted(k for k, v in unused.items() if v not in (None, False))
    if bad:
        raise ValueError(
            f"task {task.meta.name!r} is an operator-learning task; model options {bad} do not apply "
            f"(use --mixer {'|'.join(OPERATORS)}, --d-model, --n-layers, --mixer-option)"
        )
    defaults = task.model_defaults
    name = operator or defaults.get("operator", "fno")
    if not isinstance(name, str) or name not in OPERATORS:
        raise ValueError(f"task {task.meta.name!r} needs one operator ({', '.join(OPERATORS)}), got {name!r}")
    opts = dict(defaults.get("options", {}).get(name, {}))
    if d_model is not None:
        opts["width"] = d_model
    if n_layers is not None:
        opts["n_layers"] = n_layers
    opts.update(mixer_options or {})
    if defaults.get("normalize"):
        opts.setdefault("normalizer", task.meta.extra["normalizer"])
    return build_operator(name, task.meta.extra["dim"], **opts)
