"""Causal language model: backbone of causal mixers -> tied output projection, with ``generate``.

Generation uses each mixer's recurrent ``step`` (a KV cache for attention, an O(1) state for
SSMs and linear attention) when every layer supports it: the prompt is prefilled in one chunked
forward that returns the state, then tokens are decoded one at a time. Otherwise it falls back
to re-running the full forward on the growing sequence (same tokens, quadratic cost).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.constants import IGNORE
from .base import LongseqModel, make_backbone, model_class
from .config import MODEL_KINDS, ModelConfig
from .sibert import si_logits


@model_class
class CausalLM(LongseqModel):
    """Causal LM over a stack of causal mixer layers (see :class:`~longseq.models.config.ModelConfig`).

    Output head (``tie_embeddings``): tied to the token table, or a separate linear layer. Initial
    logit scale: a fresh model should predict close to uniform (loss ~ ln V). With a tied head the
    logits are ``h . E[v]`` with ``h`` of unit RMS after the final norm, so their standard deviation
    is ``std(E) sqrt(d_model)``: an N(0, 1) table gives ~sqrt(d) (loss ~43 nats at V = 64, d = 64).
    The tied table is therefore initialised with the "small init" of Nguyen & Salazar 2019
    ("Transformers without Tears", sec. 2.2: std sqrt(2 / (5 d)), also GPT-NeoX's embedding init),
    which gives logits of std sqrt(2/5) ~ 0.63 at any width; learned position tables get the same
    std so tokens and positions enter the first layer at the same scale. The untied head keeps
    ``nn.Linear``'s default (std 1/sqrt(3 d) per weight: logits of std ~0.58) and its input table
    N(0, 1); H-SoftPOS' tied head ``E (W h)`` already has unit-scale entries (its table is N(0, 1/e),
    nn/embeddings.py) and is left as is; SIBERT's output temperature: see models/sibert.py.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        n_layers: int | None = None,
        *,
        mixer: str | list = "softmax",
        mixer_options: dict | None = None,
        num_heads: int = 1,
        norm: str = "layernorm",
        ffn: str = "mlp",
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
        position: str = "none",
        max_len: int | None = None,
        tie_embeddings: bool = True,
        scale_invariant: bool = False,
        shortcuts: bool = True,
        position_options: dict | None = None,
        embedding: str = "token",
        embedding_options: dict | None = None,
        ffn_options: dict | None = None,
        layers: list | None = None,
    ) -> None:
        super().__init__()
        cfg = ModelConfig.from_dict(
            dict(
                vocab_size=vocab_size,
                d_model=d_model,
                n_layers=n_layers,
                mixer=mixer,
                mixer_options=mixer_options,
                layers=layers,
                num_heads=num_heads,
                norm=norm,
                ffn=ffn,
                ffn_mult=ffn_mult,
                dropout=dropout,
                position=position,
                max_len=max_len,
                tie_embeddings=tie_embeddings,
                scale_invariant=scale_invariant,
                shortcuts=shortcuts,
                position_options=position_options,
                embedding=embedding,
                embedding_options=embedding_options,
                ffn_options=ffn_options,
            ),
            kind="lm",
        )
        if embedding == "patches":
            raise ValueError("embedding='patches' is an image front-end for classifiers; a causal LM cannot use it")
        self.model_config, self.config = cfg, cfg.to_dict()
        self.scale_invariant = scale_invariant
        self.backbone = make_backbone(cfg, causal=True)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings and embedding != "token":  # logits = E (W h) through the narrower H-SoftPOS table
            self.lm_head = self.backbone.embed.tied_head(d_model)
        elif tie_embeddings:
            self.lm_head.weight = self.backbone.embed.weight
            if not scale_invariant:  # SIBERT normalises E: its scale does not matter
                std = math.sqrt(2.0 / (5.0 * d_model))
                nn.init.normal_(self.backbone.embed.weight, std=std)
                if position == "learned":
                    nn.init.normal_(self.backbone.pos_embed.weight, std=std)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return si_logits(h, self.lm_head.weight) if self.scale_invariant else self.lm_head(h)

    def forward(self, ids, mask=None, *, state=None, return_state=False):
        """``ids: [B, L]`` -> logits ``[B, L, vocab]`` (and the recurrent state with ``return_state``)."""
        out = self.backbone(ids, mask, state=state, return_state=return_state)
        if return_state:
            h, state = out
            return self._logits(h), state
        return self._logits(out)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def init_state(self, batch_size: int, device=None, dtype=None) -> dict:
        return self.backbone.init_state(batch_size, device, dtype)

    def step(self, ids_t: torch.Tensor, state: dict):
        """``ids_t: [B]`` -> (logits ``[B, vocab]``, state)."""
        h, state = self.backbone.step(ids_t, state)
        return self._logits(h), state

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``input_ids: [B, L]`` by ``max_new_tokens``; ``temperature=0`` is greedy.

        Returns ``[B, L + max_new_tokens]``. ``use_cache=None`` uses recurrent decoding when every
        layer supports ``step``.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(
                f"generate expects a non-empty prompt of shape [batch, length], got {tuple(input_ids.shape)}"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if use_cache is None:
            use_cache = self.backbone.supports_step
        was_training = self.training
        self.eval()
        out = input_ids
        if use_cache:
            logits, state = self(input_ids, return_state=True)
            logits = logits[:, -1]
        for i in range(max_new_tokens):
            if not use_cache:
                logits = self(out)[:, -1]
            nxt = _sample(logits, temperature, top_k, generator)
            out = torch.cat([out, nxt[:, None]], dim=1)
            if use_cache and i + 1 < max_new_tokens:
                logits, state = self.step(nxt, state)
        self.train(was_training)
        return out


MODEL_KINDS["lm"] = CausalLM


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
