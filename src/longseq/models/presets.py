"""Named model configurations from the papers: ``spade``, ``h3_hybrid`` and ``anthe``.

A preset is a shortcut for keyword arguments of :class:`~longseq.models.CausalLM` /
:class:`~longseq.models.SequenceClassifier` (per-layer ``mixer`` lists, embedding, FFN, ...);
:func:`preset_config` returns them, :func:`build_preset` builds the model, and
``longseq train --model-preset NAME`` applies them on top of the task's model defaults (explicit
flags still win).

``spade``      SPADE (Zuo et al. 2022, arXiv 2212.08136, sec. 3; official ``run_lm.sh`` with
               ``s4_every_n_layers`` larger than the depth): layer 0 is the ``spade`` mixer (S4 and
               local attention in parallel, concat + projection), layers 1.. are ``local`` attention
               with the same window. SPADE's T5 relative-position buckets are replaced by RoPE in
               every local attention (``rope=True``); no absolute positions (``position="none"``).
               Options: ``window`` (128), ``ssm`` (``s4``), ``combine`` (``concat``), ``ssm_options``.
``h3_hybrid``  Hybrid H3 (Fu, Dao et al. 2023, "Hungry Hungry Hippos", arXiv 2212.14052): H3 layers
               with softmax attention at ``attn_layers`` (0-indexed). Default: "layers 2 and
               N/2 + 1" (1-indexed, the placement stated for the paper's hybrids; the paper text was
               not re-read here), i.e. ``{1, N // 2}``; for N = 2 that is the single layer 1
               (duplicates merge), for N = 1 layer 0. The released checkpoints use other
               placements (``--attn-layer-idx``: 125M 12 layers ``[6]``, 355M/1.3B 24 layers
               ``[8, 16]``, 2.7B 32 layers ``[8, 16, 24]``): pass them as ``attn_layers``. The
               attention layers use rotary embeddings as in the released models (``rope=True``),
               the H3 layers no positions; MLP feed-forward (GELU) as in the paper's blocks.
``anthe``      Anthe (Herranz-Celotti & Rrapaj 2023, arXiv 2305.10991; official
               ``comments='geglu_gateattention_hsoftpos:2_tcffn:.005_tcpreatt:.07_tclength:2'``):
               KgV attention (``kgv``), H-SoftPOS embedding with 2 levels, SwiGLU feed-forward
               (the code's "geglu" uses swish), tensor-chain (length 2) factorisations of the
               attention's input projections (ratio ``tc_attention`` = 0.07) and of all FFN
               matrices (ratio ``tc_ffn`` = 0.005), and an untied dense output layer. The block
               is longseq's pre-norm block (Anthe is post-norm, like the original Transformer);
               decoder-only (Anthe is an encoder-decoder translation model).
"""

from __future__ import annotations

import inspect
from typing import Any

from .causal_lm import CausalLM
from .classifier import SequenceClassifier

PRESETS = ("spade", "h3_hybrid", "anthe")


def _spade(
    n_layers: int, *, window: int = 128, ssm: str = "s4", combine: str = "concat", ssm_options: dict | None = None
) -> dict:
    local = {"name": "local", "window": window, "rope": True}
    bottom = {"name": "spade", "window": window, "rope": True, "ssm": ssm, "combine": combine}
    if ssm_options:
        bottom["ssm_options"] = dict(ssm_options)
    return {"mixer": [bottom] + [dict(local) for _ in range(n_layers - 1)], "position": "none"}


def h3_attention_layers(n_layers: int) -> list[int]:
    """The H3 paper's hybrid placement, 0-indexed: layers 2 and N/2 + 1 (1-indexed) -> ``{1, N // 2}``."""
    return sorted({min(1, n_layers - 1), n_layers // 2})


def _h3_hybrid(
    n_layers: int,
    *,
    attn_layers: list[int] | tuple[int, ...] | None = None,
    attention: str = "softmax",
    h3_options: dict | None = None,
) -> dict:
    idx = h3_attention_layers(n_layers) if attn_layers is None else sorted(set(attn_layers))
    bad = [i for i in idx if not isinstance(i, int) or not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"h3_hybrid: attn_layers must be layer indices in [0, {n_layers}), got {bad}")
    h3 = {"name": "h3", **(h3_options or {})}
    attn = {"name": attention, "rope": True}
    return {"mixer": [dict(attn) if i in idx else dict(h3) for i in range(n_layers)], "position": "none"}


def _anthe(
    n_layers: int, *, tc_attention: float = 0.07, tc_ffn: float = 0.005, tc_length: int = 2, levels: int = 2
) -> dict:
    kgv = {
        "name": "kgv",
        "bias": True,
        "proj": "tensor_chain",  # Keras Dense layers have biases
        "proj_options": {"ratio": tc_attention, "length": tc_length},
    }
    return {
        "mixer": [dict(kgv) for _ in range(n_layers)],
        "embedding": "hsoftpos",
        "embedding_options": {"levels": levels},
        "ffn": "swiglu",
        "ffn_options": {"linear": "tensor_chain", "ratio": tc_ffn, "length": tc_length},
        "position": "none",
        "tie_embeddings": False,
    }


_BUILDERS = {"spade": _spade, "h3_hybrid": _h3_hybrid, "anthe": _anthe}


def preset_options(name: str) -> dict[str, Any]:
    """The options of preset ``name`` with their defaults."""
    fn = _builder(name)
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


def _builder(name: str):
    if name not in _BUILDERS:
        raise ValueError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return _BUILDERS[name]


def preset_config(name: str, n_layers: int = 2, **options) -> dict[str, Any]:
    """Model keyword arguments of preset ``name`` for ``n_layers`` layers (without d_model,
    num_heads or vocabulary: those stay the caller's). ``options`` are the preset's own
    (:func:`preset_options`)."""
    fn = _builder(name)
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
    unknown = sorted(set(options) - set(preset_options(name)))
    if unknown:
        raise ValueError(
            f"model preset {name!r} got unknown option(s) {unknown}; its options are: "
            + ", ".join(f"{k}={v!r}" for k, v in preset_options(name).items())
        )
    return {"n_layers": n_layers, **fn(n_layers, **options)}


def build_preset(
    name: str,
    vocab_size: int,
    *,
    num_classes: int | None = None,
    d_model: int = 128,
    n_layers: int = 2,
    num_heads: int = 1,
    preset_options: dict | None = None,
    **overrides,
):
    """A :class:`CausalLM` (``num_classes=None``) or :class:`SequenceClassifier` configured by preset
    ``name``; ``overrides`` are further model keyword arguments and win over the preset's."""
    cfg = {**preset_config(name, n_layers, **(preset_options or {})), **overrides}
    if num_classes is None:
        return CausalLM(vocab_size, d_model, num_heads=num_heads, **cfg)
    cfg.pop("tie_embeddings", None)
    return SequenceClassifier(vocab_size, num_classes, d_model, num_heads=num_heads, **cfg)
