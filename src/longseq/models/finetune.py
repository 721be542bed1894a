"""Fine-tuning from a pre-trained :class:`MaskedLM`: load its encoder into a :class:`SequenceClassifier`.

The pre-train / fine-tune recipe of BERT (Devlin et al. 2019, sec. 3.2): the encoder (token
embedding, positions, every block, the final norm: ``backbone.*``) is copied, the MLM head is
dropped and the classification head is newly initialised.

* :func:`load_encoder` (``model``, ``source``) copies ``source``'s ``backbone.*`` tensors into
  ``model.backbone`` and returns a :class:`LoadReport` naming every tensor of both models:
  ``loaded`` (copied), ``skipped`` (in the source, not used: the MLM head) and ``initialised``
  (in the model, not in the source: the new head). Before copying anything it compares the
  architectures: the backbone settings of the two configs (``d_model``, ``n_layers``, ``mixer``,
  ``num_heads``, ...) key by key, then the backbone tensor names and shapes in order; the first
  difference raises a ``ValueError`` that names it. ``source`` is a MaskedLM, a saved model
  directory (``model.save``), or a run directory (its ``model/``).
* :func:`classifier_from_pretrained` builds the classifier with the source's encoder architecture
  (vocabulary, width, depth, mixers, positions) and loads it; :func:`classifier_like` builds the
  same classifier without loading (the from-scratch baseline).
* :func:`layerwise_lr_decay` scales each parameter's learning rate by ``decay ** depth`` counted
  from the top (ELECTRA, Clark et al. 2020, appendix; "layer-wise learning-rate decay"): the head
  gets ``lr``, the last block ``lr * decay``, ..., the first block ``decay ** n_layers`` and the
  embeddings (and position tables) ``decay ** (n_layers + 1)``. It tags parameters with
  :func:`longseq.optim.scale_lr`, so the trainer's AdamW groups apply it (mixer-tagged SSM rates
  are scaled as well).
* :func:`freeze_embeddings` sets ``requires_grad=False`` on the token (and learned position)
  embeddings; the trainer's optimiser leaves them out.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..optim import scale_lr
from .base import CONFIG_FILE, LongseqModel, load

# config keys that define the encoder (everything the backbone is built from)
ENCODER_KEYS = (
    "vocab_size",
    "d_model",
    "n_layers",
    "layers",
    "num_heads",
    "norm",
    "ffn",
    "ffn_mult",
    "position",
    "max_len",
    "shortcuts",
    "position_options",
    "ffn_options",
    "embedding",
    "embedding_options",
    "scale_invariant",
)
_DEFAULTS = {
    "shortcuts": True,
    "position_options": None,
    "ffn_options": None,
    "embedding": "token",
    "embedding_options": None,
    "scale_invariant": False,
}


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": self.loaded, "skipped": self.skipped, "initialised": self.initialised}

    def __str__(self) -> str:
        lines = [
            f"encoder from {self.source}: {len(self.loaded)} tensors loaded, {len(self.skipped)} skipped, "
            f"{len(self.initialised)} newly initialised"
        ]
        for what, names in (("loaded", self.loaded), ("skipped", self.skipped), ("initialised", self.initialised)):
            lines += [f"  {what:<11} {n}" for n in names]
        return "\n".join(lines)


def resolve_source(source) -> LongseqModel:
    """A model instance, a saved model directory, or a run directory holding ``model/``."""
    if isinstance(source, nn.Module):
        return source
    p = Path(source)
    if (p / "model" / CONFIG_FILE).is_file():
        p = p / "model"
    if not (p / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"--init-from {str(source)!r}: neither a saved model directory ({CONFIG_FILE}) nor a "
            f"run directory with model/{CONFIG_FILE} (has the pre-training run finished?)"
        )
    return load(p)


def _encoder_config(model) -> dict:
    cfg = dict(getattr(model, "config", {}) or {})
    return {k: cfg.get(k, _DEFAULTS.get(k)) for k in ENCODER_KEYS}


def _norm(v):
    return json.loads(json.dumps(v)) if v is not None else None  # tuples vs lists, as saved


def check_compatible(model, source) -> None:
    """``ValueError`` naming the first difference between the two encoders (config, then tensors)."""
    a, b = _encoder_config(model), _encoder_config(source)
    for k in ENCODER_KEYS:
        if k == "layers" and a["n_layers"] == b["n_layers"]:  # name the first differing layer setting
            for i, (la, lb) in enumerate(zip(_norm(a[k]) or [], _norm(b[k]) or [])):
                for key in sorted(set(la) | set(lb)):
                    if la.get(key) != lb.get(key):
                        raise ValueError(
                            f"encoder architecture differs at 'layers[{i}].{key}': the model has "
                            f"{la.get(key)!r}, the pre-trained encoder has {lb.get(key)!r}"
                        )
        if _norm(a[k]) != _norm(b[k]):
            raise ValueError(
                f"encoder architecture differs at {k!r}: the model has {a[k]!r}, the pre-trained encoder has {b[k]!r}"
            )
    shape = lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__  # noqa: E731
    ma = [(n, shape(t)) for n, t in model.backbone.state_dict().items()]
    mb = [(n, shape(t)) for n, t in source.backbone.state_dict().items()]
    for (na, sa), (nb, sb) in zip(ma, mb):
        if na != nb:
            raise ValueError(
                f"encoder tensors differ: the model has backbone.{na}, the pre-trained encoder has "
                f"backbone.{nb} at the same position"
            )
        if sa != sb:
            raise ValueError(
                f"encoder tensor backbone.{na} has shape {list(sa)} in the model but {list(sb)} in the "
                f"pre-trained encoder"
            )
    if len(ma) != len(mb):
        extra = ma[len(mb)][0] if len(ma) > len(mb) else mb[len(ma)][0]
        raise ValueError(f"encoder tensor counts differ ({len(ma)} vs {len(mb)}): first unmatched backbone.{extra}")


def load_encoder(model: nn.Module, source) -> LoadReport:
    """Copy the pre-trained encoder of ``source`` into ``model.backbone`` (see the module docstring)."""
    src = resolve_source(source)
    if not hasattr(model, "backbone") or not hasattr(src, "backbone"):
        raise ValueError("load_encoder needs two longseq models with a .backbone (e.g. MaskedLM -> SequenceClassifier)")
    check_compatible(model, src)
    label = source if isinstance(source, (str, os.PathLike)) else type(src).__name__
    report = LoadReport(str(label))
    enc = src.backbone.state_dict()
    with torch.no_grad():  # strict: every key checked above; extra states (BigBird's seed) included
        model.backbone.load_state_dict(enc, strict=True)
    report.loaded = [f"backbone.{n}" for n in enc]
    loaded = set(report.loaded)
    # the tied MLM decoder shares backbone.embed.weight: it is loaded through the encoder, so only
    # the source's own head tensors are skipped
    report.skipped = [n for n in src.state_dict() if n not in loaded]
    report.initialised = [n for n in model.state_dict() if n not in loaded]
    return report


def classifier_like(
    source, num_classes: int, *, pooling: str = "mean", pair: bool = False, dropout: float | None = None, **overrides
):
    """A freshly initialised :class:`SequenceClassifier` with ``source``'s encoder architecture
    (vocabulary included): the from-scratch twin of a fine-tuned model."""
    from .classifier import SequenceClassifier

    src = resolve_source(source)
    cfg = {k: v for k, v in _encoder_config(src).items() if k != "vocab_size"}
    cfg = {k: v for k, v in cfg.items() if v is not None or k == "max_len"}
    if cfg.get("scale_invariant") is False:
        cfg.pop("scale_invariant")
    if cfg.get("embedding") == "token" and not cfg.get("embedding_options"):
        cfg.pop("embedding", None)
        cfg.pop("embedding_options", None)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "mixer" in overrides or "mixer_options" in overrides:  # a stack of its own: the overrides state it
        overrides.setdefault("mixer", [sp["mixer"] for sp in cfg["layers"]])
        cfg.pop("layers")
    elif "n_layers" in overrides:  # the source's layers, cycled to the new depth
        cfg["layers"] = [cfg["layers"][i % len(cfg["layers"])] for i in range(overrides["n_layers"])]
    cfg.update(overrides)
    if dropout is not None:
        cfg["dropout"] = dropout
    elif "dropout" in src.config:
        cfg["dropout"] = src.config["dropout"]
    return SequenceClassifier(src.config["vocab_size"], num_classes, pooling=pooling, pair=pair, **cfg)


def classifier_from_pretrained(
    source, num_classes: int, *, pooling: str = "mean", pair: bool = False, dropout: float | None = None, **overrides
):
    """A :class:`SequenceClassifier` with ``source``'s encoder architecture and weights; returns
    ``(classifier, report)``. ``overrides`` change encoder settings (then the architectures must
    still match, else ``ValueError``); ``dropout`` may differ freely."""
    src = resolve_source(source)
    model = classifier_like(src, num_classes, pooling=pooling, pair=pair, dropout=dropout, **overrides)
    return model, load_encoder(model, src if not isinstance(source, (str, os.PathLike)) else source)


def layerwise_lr_decay(model: nn.Module, decay: float) -> dict[str, float]:
    """Tag every parameter of ``model`` with ``lr_scale = decay ** depth`` from the top (see the
    module docstring); returns ``{name: scale}``. ``decay`` in (0, 1]."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer-wise lr decay must lie in (0, 1], got {decay!r}")
    blocks = model.backbone.blocks
    n = len(blocks)
    depth_of = {}
    for i, b in enumerate(blocks):
        for p in b.parameters():
            depth_of[id(p)] = n - i
    scales = {}
    for name, p in model.named_parameters():
        if name.startswith("backbone.") and id(p) not in depth_of and not name.startswith("backbone.norm."):
            d = n + 1  # embeddings, position tables
        else:
            d = depth_of.get(id(p), 0)  # head and the final norm: 0
        s = decay**d
        scales[name] = s
        if s != 1.0:
            scale_lr(p, s)
    return scales


def freeze_embeddings(model: nn.Module) -> list[str]:
    """``requires_grad=False`` on the backbone's token and learned-position embeddings; returns their names."""
    frozen = []
    for mod_name in ("embed", "pos_embed"):
        m = getattr(model.backbone, mod_name, None)
        if m is None:
            continue
        for n, p in m.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"backbone.{mod_name}.{n}")
    return frozen
