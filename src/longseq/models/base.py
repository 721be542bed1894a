"""Shared behaviour of longseq models: the constructor config and safe save/load.

``model.save(dir)`` writes ``config.json`` (class name, config schema version, the model's
configuration (:class:`~longseq.models.config.ModelConfig` as constructor keywords), sha256 of the
weights) and ``model.safetensors``; :func:`load` rebuilds the model from the config and loads
the weights. Loading never unpickles code, checks the weights' hash (a truncated or tampered
file is reported, not half-loaded) and both files are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from ..mixers import Mixer
from ..nn.moe import SwitchFeedForward
from ..utils.io import atomic_write, sha256_file
from .backbone import Backbone
from .config import SCHEMA, ModelConfig, pin_old_defaults, upgrade_options
from .sibert import SIBackbone

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "LongseqModel", "atomic_write", "load", "make_backbone", "model_class"]

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_MODEL_CLASSES: dict[str, type] = {}


def model_class(cls):
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


# atomic_write lives in longseq.utils.io (used by models, the trainer, the benchmarks and the arena);
# it is re-exported here for callers that imported it from longseq.models.base.
_sha256 = sha256_file


class LongseqModel(nn.Module):
    """Base of the models: ``model_config`` (a :class:`ModelConfig`) and ``config``, its dict form
    (constructor keywords: ``type(model)(**model.config)`` rebuilds the model)."""

    config: dict
    model_config: ModelConfig

    @classmethod
    def from_config(cls, config: ModelConfig | dict[str, Any]) -> LongseqModel:
        """Build from a :class:`ModelConfig` (or its dict form)."""
        if isinstance(config, ModelConfig):
            config = config.to_dict()
        return cls(**config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def aux_losses(self) -> list[torch.Tensor]:
        """Auxiliary losses of the last forward, from the modules that declare one: mixers registered
        with ``aux_loss=True`` (``MixerSpec.aux_loss``) and Switch MoE feed-forwards (load balancing
        and router z-loss, :mod:`longseq.nn.moe`). The trainer adds their sum to the loss."""
        out = []
        for m in self.modules():
            declared = isinstance(m, SwitchFeedForward) or (isinstance(m, Mixer) and m.spec.aux_loss)
            if declared and isinstance(m.aux_loss, torch.Tensor):
                out.append(m.aux_loss)
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / WEIGHTS_FILE, lambda tmp: save_model(self, tmp))
        meta = {
            "class": type(self).__name__,
            "schema": SCHEMA,
            "config": self.config,
            "weights_sha256": sha256_file(d / WEIGHTS_FILE),
        }
        atomic_write(d / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        return d


_SI_UNSUPPORTED = {
    "shortcuts": True,
    "position_options": None,
    "ffn_options": None,
    "embedding": "token",
    "embedding_options": None,
}


def make_backbone(cfg: ModelConfig, causal: bool | None):
    """The backbone of ``cfg``: :class:`~longseq.models.backbone.Backbone`, or SIBERT's
    :class:`~longseq.models.sibert.SIBackbone` with ``scale_invariant`` (which has none of the
    options in ``_SI_UNSUPPORTED``: asking for both is refused)."""
    common = dict(
        layers=[sp.to_dict() for sp in cfg.layers],
        num_heads=cfg.num_heads,
        causal=causal,
        norm=cfg.norm,
        ffn=cfg.ffn,
        ffn_mult=cfg.ffn_mult,
        dropout=cfg.dropout,
        position=cfg.position,
        max_len=cfg.max_len,
    )
    if cfg.scale_invariant:
        bad = sorted(k for k, default in _SI_UNSUPPORTED.items() if getattr(cfg, k) not in (default, {}))
        if bad:
            raise ValueError(f"scale_invariant=True (SIBERT) does not support {', '.join(bad)}")
        return SIBackbone(cfg.vocab_size, cfg.d_model, **common)
    return Backbone(
        cfg.vocab_size,
        cfg.d_model,
        shortcuts=cfg.shortcuts,
        position_options=cfg.position_options,
        embedding=cfg.embedding,
        embedding_options=cfg.embedding_options,
        ffn_options=cfg.ffn_options,
        **common,
    )


def load(directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> LongseqModel:
    """Restore a model written by ``model.save(directory)``."""
    d = Path(directory)
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: not a saved longseq model directory")
    try:
        meta = json.loads(cfg_path.read_text())
        cls_name, config, digest = meta["class"], meta["config"], meta["weights_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path} is corrupt ({e}); expected keys class, config, weights_sha256") from None
    if cls_name not in _MODEL_CLASSES:
        raise ValueError(f"{cfg_path}: unknown model class {cls_name!r}; known: {', '.join(sorted(_MODEL_CLASSES))}")
    if "schema" not in meta:  # written before ModelConfig: constructor keywords, maybe old option names
        config = upgrade_options(config, source=str(cfg_path))
    elif meta["schema"] > SCHEMA:
        raise ValueError(f"{cfg_path} has config schema {meta['schema']}, newer than this longseq reads ({SCHEMA})")
    config = pin_old_defaults(config, meta.get("schema", 1))
    actual = sha256_file(w_path)
    if actual != digest:
        raise ValueError(
            f"{w_path} does not match the checksum recorded in {CONFIG_FILE} "
            f"(expected {digest[:12]}…, found {actual[:12]}…): the file is truncated or modified"
        )
    model = _MODEL_CLASSES[cls_name](**config)
    try:
        missing, unexpected = load_model(model, str(w_path), strict=True, device=str(map_location))
    except (SafetensorError, RuntimeError) as e:
        raise ValueError(f"{w_path} could not be loaded into {cls_name}: {e}") from None
    return model.to(map_location)
