"""Shared behaviour of longseq models: the constructor config and safe save/load.

``model.save(dir)`` writes ``config.json`` (class name, constructor arguments, sha256 of the
weights) and ``model.safetensors``; :func:`load` rebuilds the model from the config and loads
the weights. Loading never unpickles code, checks the weights' hash (a truncated or tampered
file is reported, not half-loaded) and both files are written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
_MODEL_CLASSES: dict[str, type] = {}


def model_class(cls):
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (same directory, so atomic).

    The file gets the permissions of any file the user creates (``mkstemp`` makes 0600 files)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class LongseqModel(nn.Module):
    """Base of the models: subclasses store their constructor arguments in ``self.config``."""

    config: dict

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / WEIGHTS_FILE, lambda tmp: save_model(self, tmp))
        meta = {"class": type(self).__name__, "config": self.config, "weights_sha256": _sha256(d / WEIGHTS_FILE)}
        atomic_write(d / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        return d


def backbone_options(config: dict, *, scale_invariant: bool, shortcuts: bool, position_options: dict | None,
                     embedding: str, embedding_options: dict | None, ffn_options: dict | None) -> dict:
    """The optional backbone keywords a model passes on, recorded in ``config`` only when they are not
    the default (older saved configs keep loading). SIBERT's backbone (``scale_invariant=True``,
    models/sibert.py) has none of them: asking for both is refused."""
    extra: dict = {}
    if not shortcuts:              # vanilla (residual-free) blocks, He et al. 2023: see nn/deep_vanilla.py
        extra["shortcuts"] = False
    if position_options:           # DeBERTa / DIET options: see nn/relpos.py
        extra["position_options"] = position_options
    if ffn_options:                # MoE / structured FFN matrices: see nn/layers.py FeedForward
        extra["ffn_options"] = ffn_options
    if embedding != "token" or embedding_options:   # input front-end: see nn/embeddings.py
        extra.update(embedding=embedding, embedding_options=embedding_options)
    if scale_invariant:
        if extra:
            raise ValueError(f"scale_invariant=True (SIBERT) does not support {', '.join(sorted(extra))}")
        config["scale_invariant"] = True
    config.update(extra)
    return extra


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
    actual = _sha256(w_path)
    if actual != digest:
        raise ValueError(f"{w_path} does not match the checksum recorded in {CONFIG_FILE} "
                         f"(expected {digest[:12]}…, found {actual[:12]}…): the file is truncated or modified")
    model = _MODEL_CLASSES[cls_name](**config)
    try:
        missing, unexpected = load_model(model, str(w_path), strict=True, device=str(map_location))
    except (SafetensorError, RuntimeError) as e:
        raise ValueError(f"{w_path} could not be loaded into {cls_name}: {e}") from None
    return model.to(map_location)
