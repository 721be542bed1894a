"""Residual blocks of token mixers and the token-embedding backbone shared by all models.

A block is pre-norm (Xiong et al. 2020): ``x + Drop(Mixer(Norm(x)))`` then ``x + Drop(FFN(Norm(x)))``;
the FFN is omitted for mixers that bring their own (``spec.has_ffn``, e.g. FLASH's GAU).
Each layer may use a different mixer (hybrid stacks): ``mixer`` is a name or a list with one
entry per layer, each a name or a dict ``{"name": ..., **options}``.

``shortcuts=False`` drops both residual connections (``x = Drop(Mixer(Norm(x)))``, then
``x = Drop(FFN(Norm(x)))``); with ``norm="none"`` this is the "vanilla" transformer of He et al.
2023 (see the ``espa`` mixer and ``ffn="tat"``, :mod:`longseq.nn.deep_vanilla`). Mixers with
``layer_index``/``n_layers`` options (depth-dependent initialisation) receive their position in
the stack.

Positions: ``none``, ``sinusoidal`` or ``learned`` are added to the embedding; ``rope`` is
passed as ``rope=True`` to every layer whose mixer accepts that option (SSM layers need no
positions). ``deberta``, ``deberta_v2``, ``diet_abs`` and ``diet_rel`` enter the attention logits
(:mod:`longseq.nn.relpos`): the backbone owns the tables shared across layers (``self.relpos``,
options from ``position_options``) and passes them as ``relpos=`` to every layer whose mixer
accepts that option.

Cross-layer carry: a mixer registered with ``uses_carry=True`` takes a ``carry`` keyword in
``forward``/``step``: a dict created per forward pass (or decoding step) and shared by
consecutive such layers (evolving attention passes its logits this way); any other layer clears it.

Embedding (``embedding``): ``token`` (a plain table), ``hsoftpos`` (Anthe's H-SoftPOS, causal, with
a convolution buffer in the recurrent state) or ``patches`` (ViT patches of square images: the
hidden sequence is the patch sequence, see :meth:`Backbone.output_mask`), with options in
``embedding_options`` (:mod:`longseq.nn.embeddings`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import mixers
from ..nn.deep_vanilla import TATFeedForward, configure_tat_
from ..nn.embeddings import make_embedding
from ..nn.layers import FeedForward, make_norm, sinusoidal_table
from ..nn.relpos import SCHEMES as LOGIT_POSITIONS
from ..nn.relpos import RelativePositions
from .config import resolve_layers

POSITIONS = ("none", "sinusoidal", "learned", "rope", *LOGIT_POSITIONS)


def check_token_ids(ids: torch.Tensor, vocab_size: int, *, check_range: bool | None = None) -> None:
    """Refuse anything but integer ``[batch, length]`` ids, and (debug checks on) ids outside ``[0, vocab_size)``.

    The dtype and shape checks read metadata only. The range check reads the ids' min and max back
    to the host, which on an accelerator stalls the stream every forward, so the models run it only
    when debug checks are on (``longseq.set_debug(True)`` / ``LONGSEQ_DEBUG=1``, ``check_range=None``)
    or when asked (``check_range=True``). Without it an out-of-range id still fails, in the embedding
    lookup (CPU: ``IndexError``; CUDA: a device-side assert); the tasks produce ids in range by
    construction.
    """
    if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
        raise ValueError(f"expected integer token ids of shape [batch, length], got {ids.dtype} {tuple(ids.shape)}")
    if not (mixers.debug_enabled() if check_range is None else check_range):
        return
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]")


def layer_plan(
    mixer,
    n_layers: int | None,
    mixer_options: dict | None,
    causal: bool | None,
    layers: list | None = None,
    *,
    num_heads: int = 1,
    ffn: str = "mlp",
    ffn_mult: float = 4.0,
    ffn_options: dict | None = None,
) -> list[dict[str, Any]]:
    """Resolve each layer's mixer, options, causal flag, heads and feed-forward from the shorthand
    (``mixer``/``mixer_options``) or ``layers`` (:func:`longseq.models.config.resolve_layers`).
    ``causal=None``: bidirectional where the mixer allows it, else causal. ``num_heads`` reaches
    only mixers with heads (``MixerSpec.heads``)."""
    plan = []
    for spec_ in resolve_layers(mixer, n_layers, mixer_options, layers):
        s = mixers.spec(spec_.mixer)
        c = spec_.causal if spec_.causal is not None else causal
        if c is None:
            c = not s.bidirectional
        heads = spec_.num_heads if spec_.num_heads is not None else num_heads
        plan.append(
            {
                "name": spec_.mixer,
                "options": dict(spec_.options),
                "causal": bool(c),
                "num_heads": heads if s.heads else 1,
                "ffn": spec_.ffn if spec_.ffn is not None else ffn,
                "ffn_mult": spec_.ffn_mult if spec_.ffn_mult is not None else ffn_mult,
                "ffn_options": spec_.ffn_options if spec_.ffn_options is not None else ffn_options,
            }
        )
    return plan


class Block(nn.Module):
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
        shortcuts: bool = True,
        ffn_options: dict | None = None,
    ):
        super().__init__()
        self.shortcuts = shortcuts
        self.norm1 = make_norm(norm, d_model)
        self.mixer = mixers.build(mixer, d_model, num_heads=num_heads, causal=causal, **mixer_options)
        self.drop = nn.Dropout(dropout)
        self.ffn = None
        if not self.mixer.spec.has_ffn and ffn != "none":
            self.norm2 = make_norm(norm, d_model)
            if ffn == "tat" and ffn_options:
                raise ValueError(f"ffn='tat' takes no ffn_options, got {sorted(ffn_options)}")
            self.ffn = (
                TATFeedForward(d_model, ffn_mult, dropout)
                if ffn == "tat"
                else FeedForward(d_model, ffn, ffn_mult, dropout, ffn_options)
            )

    def _ffn(self, x, mask):
        """The FFN; the padding mask reaches FeedForward (MoE routing statistics skip padding)."""
        return self.ffn(x, mask) if isinstance(self.ffn, FeedForward) else self.ffn(x)

    def _add(self, x, h):
        return x + self.drop(h) if self.shortcuts else self.drop(h)

    def _carry_kw(self, carry: dict | None) -> dict:
        """``{"carry": carry}`` for mixers that use it; other layers break the chain."""
        if carry is None:
            return {}
        if self.mixer.spec.uses_carry:
            return {"carry": carry}
        carry.clear()
        return {}

    def forward(self, x, mask=None, state=None, return_state=False, carry=None):
        h = self.mixer(self.norm1(x), mask, state=state, return_state=return_state, **self._carry_kw(carry))
        if return_state:
            h, state = h
        x = self._add(x, h)
        if self.ffn is not None:
            x = self._add(x, self._ffn(self.norm2(x), mask))
        return (x, state) if return_state else x

    def step(self, x_t, state, carry=None):
        """One token ``x_t [B, d_model]``. Dropout is the identity in eval mode (decoding), so the
        step skips its module call then (one Python dispatch less per residual branch)."""
        add = self._add if self.training else (lambda x, h: x + h if self.shortcuts else h)
        h, state = self.mixer.step(self.norm1(x_t), state, **self._carry_kw(carry))
        x_t = add(x_t, h)
        if self.ffn is not None:
            x_t = add(x_t, self._ffn(self.norm2(x_t), None))
        return x_t, state


class Backbone(nn.Module):
    """Token embedding + positions + blocks + final norm: ``ids [B, L] -> hidden [B, L, d_model]``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int | None = None,
        *,
        mixer="softmax",
        mixer_options=None,
        num_heads: int = 1,
        causal: bool | None = None,
        norm: str = "layernorm",
        ffn: str = "mlp",
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
        position: str = "none",
        max_len: int | None = None,
        shortcuts: bool = True,
        position_options: dict | None = None,
        embedding: str = "token",
        embedding_options: dict | None = None,
        ffn_options: dict | None = None,
        layers: list | None = None,
    ):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"unknown position scheme {position!r}; choose one of: {', '.join(POSITIONS)}")
        if position == "learned" and not max_len:
            raise ValueError("position='learned' needs max_len (the longest sequence the table covers)")
        self.d_model, self.position, self.max_len = d_model, position, max_len
        plan = layer_plan(
            mixer,
            n_layers,
            mixer_options,
            causal,
            layers,
            num_heads=num_heads,
            ffn=ffn,
            ffn_mult=ffn_mult,
            ffn_options=ffn_options,
        )
        n_layers = len(plan)
        if position == "rope":
            with_rope = [p for p in plan if "rope" in mixers.spec(p["name"]).cls.options()]
            if not with_rope:
                raise ValueError(
                    "position='rope' but no layer's mixer has a 'rope' option "
                    f"(mixers: {sorted({p['name'] for p in plan})})"
                )
            for p in with_rope:
                p["options"] = {**p["options"], "rope": True}
        if position_options and position not in LOGIT_POSITIONS:
            raise ValueError(f"position_options apply to {', '.join(LOGIT_POSITIONS)}, not position={position!r}")
        if position in LOGIT_POSITIONS:
            with_relpos = [p for p in plan if "relpos" in mixers.spec(p["name"]).cls.options()]
            if not with_relpos:
                raise ValueError(
                    f"position={position!r} but no layer's mixer has a 'relpos' option "
                    f"(mixers: {sorted({p['name'] for p in plan})})"
                )
            self.relpos = RelativePositions(position, d_model, num_heads, max_len=max_len, **(position_options or {}))
            for p in with_relpos:
                p["options"] = {**p["options"], "relpos": self.relpos}
        for i, p in enumerate(plan):
            if {"layer_index", "n_layers"} <= set(mixers.spec(p["name"]).cls.options()):
                p["options"] = {"layer_index": i, "n_layers": n_layers, **p["options"]}
        self.plan = plan
        self.embedding = embedding
        self.embed = make_embedding(embedding, vocab_size, d_model, **(embedding_options or {}))
        if position == "learned":
            self.pos_embed = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(
                d_model,
                mixer=p["name"],
                mixer_options=p["options"],
                num_heads=p["num_heads"],
                causal=p["causal"],
                norm=norm,
                ffn=p["ffn"],
                ffn_mult=p["ffn_mult"],
                dropout=dropout,
                shortcuts=shortcuts,
                ffn_options=p["ffn_options"],
            )
            for p in plan
        )
        if any(p["ffn"] == "tat" for p in plan):
            configure_tat_(self.blocks)  # leaky-ReLU slope for this depth (TAT, Zhang et al. 2022)
        self.norm = make_norm(norm, d_model)

    @property
    def supports_step(self) -> bool:
        return self.embedding != "patches" and all(b.mixer.spec.step and b.mixer.causal for b in self.blocks)

    def output_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The padding mask of the hidden sequence (the patch sequence for ``patches``)."""
        return self.embed.output_mask(mask) if self.embedding == "patches" else mask

    def _embed(self, ids: torch.Tensor, offset: int, state: dict | None = None):
        """``ids [B, L]`` -> ``x [B, L', d_model]`` (and the front-end's new state when ``state``)."""
        if self.embedding == "token":
            x = self.embed(ids)
        else:
            x, state = self.embed(ids, offset, state)
        L = x.shape[1]
        if self.max_len is not None and offset + L > self.max_len:
            raise ValueError(f"sequence length {offset + L} exceeds the model's max_len={self.max_len}")
        if self.position == "sinusoidal":
            x = x + sinusoidal_table(L, self.d_model, offset, ids.device, x.dtype)
        elif self.position == "learned":
            x = x + self.pos_embed(torch.arange(offset, offset + L, device=ids.device))
        return self.drop(x) if state is None else (self.drop(x), state)

    def _check_ids(self, ids: torch.Tensor) -> None:
        check_token_ids(ids, self.embed.num_embeddings)

    def forward(self, ids, mask=None, state=None, return_state=False):
        self._check_ids(ids)
        if state is not None or return_state:
            state = state if state is not None else self.init_state(ids.shape[0], ids.device)
            x, new = self._embed_stateful(ids, state)
            new_layers, carry = [], {}
            for block, s in zip(self.blocks, state["layers"]):
                x, s = block(x, None if mask is None else mask, state=s, return_state=True, carry=carry)
                new_layers.append(s)
            return self.norm(x), {**new, "layers": new_layers}
        x = self._embed(ids, 0)
        mask = self.output_mask(mask)
        carry = {}
        for block in self.blocks:
            x = block(x, mask, carry=carry)
        return self.norm(x)

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict:
        if not self.supports_step:
            bad = sorted({b.mixer.spec.name for b in self.blocks if not b.mixer.spec.step})
            raise ValueError(f"recurrent decoding needs every layer's mixer to support step; these do not: {bad}")
        state = {"pos": 0, "layers": [b.mixer.init_state(batch_size, device=device, dtype=dtype) for b in self.blocks]}
        if self.embedding == "hsoftpos":
            state["embed"] = self.embed.init_state(batch_size, device, dtype)
        return state

    def _embed_stateful(self, ids: torch.Tensor, state: dict):
        """Embed a continuation: ``(x, state without "layers")`` advanced past ``ids``."""
        new = {"pos": state["pos"] + ids.shape[1]}
        if "embed" in state:
            x, new["embed"] = self._embed(ids, state["pos"], state["embed"])
        else:
            x = self._embed(ids, state["pos"])
        return x, new

    def step(self, ids_t: torch.Tensor, state: dict):
        """``ids_t: [B]`` -> hidden ``[B, d_model]``."""
        x, new = self._embed_stateful(ids_t[:, None], state)
        x = x[:, 0]
        new_layers, carry = [], {}
        for block, s in zip(self.blocks, state["layers"]):
            x, s = block.step(x, s, carry=carry)
            new_layers.append(s)
        return self.norm(x), {**new, "layers": new_layers}
