"""Scale-invariant (SI) models: the architecture half of the SIBERT recipe.

Li, Bhojanapalli, Zaheer, Reddi, Kumar, ICML 2022, "Robust Training of Neural Networks Using Scale
Invariant Architectures" (arXiv 2202.00980). The recipe: (1) make the network scale invariant,
i.e. the output is unchanged when any parameter group is multiplied by c > 0; (2) train it with
plain SGD + weight decay; (3) optionally clip the global gradient norm to a multiple of
sqrt(2 lambda / eta) ||W|| (see :mod:`longseq.train.sgd_si`). Part (1) is this module, reached
with ``CausalLM(..., scale_invariant=True)`` / ``SequenceClassifier(..., scale_invariant=True)``
(``longseq train --scale-invariant``).

Architecture (every parameter tensor is its own scale-invariant group). ``n(x)`` below is the
affine-free LayerNorm ``(x - mean) / max(std, 1e-6)`` (or the affine-free RMS norm with
``norm="rmsnorm"``): ``n(c x) = n(x)`` exactly for c > 0, since the floor only acts on vectors
that are (numerically) zero, where it keeps 0 -> 0 instead of dividing by zero.

* Embedding: ``x_0 = n(n(E[ids]) + n(P[pos]))`` (learned positions), ``n(n(E[ids]) + PE)``
  (sinusoidal) or ``n(E[ids])`` (none / rope): invariant to rescaling E and P.
* Block (post-norm, as BERT, with the branch output normalised before the sum)::

      h       = n(x + n(Attn(x)))        Attn = si_attention: 0-homogeneous in W_Q, W_K,
      x_next  = n(h + n(FFN(h)))         1-homogeneous in W_V, W_O; FFN = W_2 relu(W_1 h)

  with no biases anywhere and ReLU (positively homogeneous) instead of GELU, so each branch
  is homogeneous in each of its matrices and the inner ``n`` removes the scale.
* Output: ``logits = tau n(h) . (W / rms(W))^T / sqrt(d_model)``, rms over the whole matrix: the
  matrix is normalised as one group, so the rows keep their relative norms (token frequencies
  can still be learned). The temperature is fixed (a trained temperature would be a parameter
  that is not scale invariant) and the paper does not fix its value: ``tau = sqrt(2/5)`` gives
  initial logits of std ~0.63, the scale of the standard models (a unit scale, tau = 1, starts
  a 64-token LM 0.5 nats above ln V). With tied embeddings the same E feeds the input and the output; both uses are
  invariant to rescaling E. The pair classifier's MLP head is ``relu(W_1 n(z))`` -> ``n`` -> the
  same normalised output layer.

Points the available text (the abstract) did not settle, decided here (from the project's reference
notes, written from memory of the paper: low confidence on its exact form): the ReLU-normalised attention (:mod:`longseq.mixers.si_attention`),
post-norm blocks with normalised branches, the normalised embedding sum, and the
Frobenius-normalised output layer with a fixed tau/sqrt(d) temperature. Softmax attention layers
are replaced by ``si_attention`` (``"softmax"`` in the mixer list means "the model's
attention"); other mixers are rejected, as they are not scale invariant.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import mixers
from ..nn.layers import sinusoidal_table
from .backbone import POSITIONS, check_token_ids, layer_plan
from .config import resolve_layers

SI_MIXERS = ("si_attention",)
_ATTENTION_ALIASES = ("softmax", "softmax_naive")
NORMS = ("layernorm", "rmsnorm")
_FLOOR = 1e-12  # variance floor of n(): only zero vectors ever reach it
# Fixed output temperature (times 1/sqrt(d)): initial logits of std sqrt(2/5) ~ 0.63, the scale the
# standard models start at (models/causal_lm.py), so a fresh model predicts close to uniform.
SI_TEMPERATURE = math.sqrt(2.0 / 5.0)


def si_norm(x: torch.Tensor, kind: str = "layernorm") -> torch.Tensor:
    """Affine-free norm over the last dim, exactly invariant to positive rescaling of ``x``."""
    if kind == "layernorm":
        x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).clamp_min(_FLOOR))


def si_logits(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``h: [..., d]`` (normalised) against ``weight: [n_out, d]`` normalised as one group -> ``[..., n_out]``."""
    w_hat = weight * torch.rsqrt(weight.pow(2).mean().clamp_min(_FLOOR))
    return F.linear(h, w_hat) * (SI_TEMPERATURE / math.sqrt(weight.shape[1]))


class SIFeedForward(nn.Module):
    """``W_2 relu(W_1 x)`` without biases: homogeneous of degree 1 in W_1 and in W_2."""

    def __init__(self, d_model: int, mult: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(mult * d_model)
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.drop(F.relu(self.w1(x))))


class SIBlock(nn.Module):
    """``h = n(x + n(Mixer(x)))``, ``x' = n(h + n(FFN(h)))`` (FFN omitted for mixers that bring one)."""

    def __init__(
        self,
        d_model: int,
        *,
        mixer: str,
        mixer_options: dict,
        num_heads: int,
        causal: bool,
        norm: str = "layernorm",
        ffn: str = "mlp",
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm = norm
        self.mixer = mixers.build(mixer, d_model, num_heads=num_heads, causal=causal, **mixer_options)
        self.drop = nn.Dropout(dropout)
        self.ffn = SIFeedForward(d_model, ffn_mult, dropout) if ffn != "none" and not self.mixer.spec.has_ffn else None

    def _residual(self, x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return si_norm(x + self.drop(si_norm(branch, self.norm)), self.norm)

    def forward(self, x, mask=None, state=None, return_state=False):
        h = self.mixer(x, mask, state=state, return_state=return_state)
        if return_state:
            h, state = h
        x = self._residual(x, h)
        if self.ffn is not None:
            x = self._residual(x, self.ffn(x))
        return (x, state) if return_state else x

    def step(self, x_t, state):
        h, state = self.mixer.step(x_t, state)
        x_t = self._residual(x_t, h)
        if self.ffn is not None:
            x_t = self._residual(x_t, self.ffn(x_t))
        return x_t, state


def _si_mixer(name: str) -> str:
    """The scale-invariant mixer standing in for ``name`` (softmax -> si_attention)."""
    name = "si_attention" if name in _ATTENTION_ALIASES else name
    if name not in SI_MIXERS:
        raise ValueError(
            f"scale_invariant=True: mixer {name!r} is not scale invariant; use one of "
            f"{', '.join(SI_MIXERS + _ATTENTION_ALIASES)} (softmax layers become si_attention)"
        )
    return name


def si_plan(
    mixer,
    n_layers: int | None,
    mixer_options: dict | None,
    causal: bool | None,
    layers: list | None = None,
    *,
    num_heads: int = 1,
) -> list[dict]:
    """:func:`layer_plan` with attention layers mapped to ``si_attention``; other mixers rejected."""
    specs = resolve_layers(mixer, n_layers, mixer_options, layers)
    for sp in specs:
        sp.mixer = _si_mixer(sp.mixer)
    return layer_plan(None, None, None, causal, specs, num_heads=num_heads)


class SIBackbone(nn.Module):
    """Scale-invariant counterpart of :class:`~longseq.models.backbone.Backbone` (same interface):
    ``ids [B, L] -> hidden [B, L, d_model]``, the hidden states normalised by ``n``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int | None = None,
        *,
        mixer="si_attention",
        mixer_options=None,
        num_heads: int = 1,
        causal: bool | None = None,
        norm: str = "layernorm",
        ffn: str = "mlp",
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
        position: str = "none",
        max_len: int | None = None,
        layers: list | None = None,
    ):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position scheme {position!r}; choose one of: {', '.join(POSITIONS)}")
        if position == "learned" and not max_len:
            raise ValueError("position='learned' needs max_len (the longest sequence the table covers)")
        if norm not in NORMS:
            raise ValueError(
                f"scale_invariant=True needs a normalisation: norm must be one of {', '.join(NORMS)} "
                f"(used without affine parameters), got {norm!r}"
            )
        if ffn not in ("mlp", "none"):
            raise ValueError(
                f"scale_invariant=True uses the ReLU MLP (positively homogeneous): ffn must be "
                f"'mlp' or 'none', got {ffn!r}"
            )
        self.d_model, self.position, self.max_len, self.norm_kind = d_model, position, max_len, norm
        plan = si_plan(mixer, n_layers, mixer_options, causal, layers, num_heads=num_heads)
        if any(p["ffn"] != ffn or p["ffn_mult"] != ffn_mult or p["ffn_options"] for p in plan):
            raise ValueError(
                "scale_invariant=True (SIBERT) has one ReLU MLP for every layer: per-layer ffn settings "
                "are not supported"
            )
        if position == "rope":
            for p in plan:
                p["options"] = {**p["options"], "rope": True}
        self.plan = plan
        self.embed = nn.Embedding(vocab_size, d_model)
        if position == "learned":
            self.pos_embed = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            SIBlock(
                d_model,
                mixer=p["name"],
                mixer_options=p["options"],
                num_heads=p["num_heads"],
                causal=p["causal"],
                norm=norm,
                ffn=ffn,
                ffn_mult=ffn_mult,
                dropout=dropout,
            )
            for p in plan
        )

    @property
    def supports_step(self) -> bool:
        return all(b.mixer.spec.step and b.mixer.causal for b in self.blocks)

    def _embed(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        L = ids.shape[-1]
        if self.max_len is not None and offset + L > self.max_len:
            raise ValueError(f"sequence length {offset + L} exceeds the model's max_len={self.max_len}")
        x = si_norm(self.embed(ids), self.norm_kind)  # [B, L, D]
        if self.position == "sinusoidal":
            x = si_norm(x + sinusoidal_table(L, self.d_model, offset, ids.device, x.dtype), self.norm_kind)
        elif self.position == "learned":
            pos = self.pos_embed(torch.arange(offset, offset + L, device=ids.device))  # [L, D]
            x = si_norm(x + si_norm(pos, self.norm_kind), self.norm_kind)
        return self.drop(x)

    def _check_ids(self, ids: torch.Tensor) -> None:
        check_token_ids(ids, self.embed.num_embeddings)

    def forward(self, ids, mask=None, state=None, return_state=False):
        self._check_ids(ids)
        if state is not None or return_state:
            state = state if state is not None else self.init_state(ids.shape[0], ids.device)
            x = self._embed(ids, state["pos"])
            new_layers = []
            for block, s in zip(self.blocks, state["layers"]):
                x, s = block(x, mask, state=s, return_state=True)
                new_layers.append(s)
            return x, {"pos": state["pos"] + ids.shape[1], "layers": new_layers}
        x = self._embed(ids, 0)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict:
        if not self.supports_step:
            raise ValueError("recurrent decoding needs causal si_attention layers (build the model causal)")
        return {"pos": 0, "layers": [b.mixer.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks]}

    def step(self, ids_t: torch.Tensor, state: dict):
        """``ids_t: [B]`` -> hidden ``[B, d_model]``."""
        x = self._embed(ids_t[:, None], state["pos"])[:, 0]
        new_layers = []
        for block, s in zip(self.blocks, state["layers"]):
            x, s = block.step(x, s)
            new_layers.append(s)
        return x, {"pos": state["pos"] + 1, "layers": new_layers}


class SIHead(nn.Module):
    """Classification head: ``si_logits(n(z), W)``; with ``hidden``, ``z`` first goes through
    ``n(relu(W_1 n(z)))`` (the pair classifier's MLP)."""

    def __init__(self, d_in: int, n_out: int, hidden: int | None = None, norm: str = "layernorm"):
        super().__init__()
        self.norm = norm
        self.hidden = nn.Linear(d_in, hidden, bias=False) if hidden else None
        self.weight = nn.Parameter(torch.empty(n_out, hidden or d_in))
        nn.init.normal_(self.weight)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = si_norm(z, self.norm)
        if self.hidden is not None:
            z = si_norm(F.relu(self.hidden(z)), self.norm)
        return si_logits(z, self.weight)
