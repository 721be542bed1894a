"""Sequence classification: backbone -> pooling -> linear head.

Pooling is padding-aware: ``mean`` over real tokens, ``first`` token, or ``last`` real token.
Paired inputs ``[B, 2, L]`` (LRA Retrieval's two-tower setup, Tay et al. 2021, sec. 3.3) encode
each document with the shared backbone and classify ``[u, v, u * v, u - v]`` with an MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import LongseqModel, make_backbone, model_class
from .config import MODEL_KINDS, ModelConfig
from .sibert import SIHead

POOLINGS = ("mean", "first", "last")


def pool(h: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """``h: [B, L, D]``, ``mask: [B, L]`` -> ``[B, D]``."""
    if how == "first":
        return h[:, 0]
    if mask is None:
        return h.mean(1) if how == "mean" else h[:, -1]
    if how == "mean":
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    last = (mask.long().sum(1) - 1).clamp_min(0)  # index of the last real token
    return h[torch.arange(h.shape[0], device=h.device), last]


@model_class
class SequenceClassifier(LongseqModel):
    """Backbone -> pooling -> head (see :class:`~longseq.models.config.ModelConfig`)."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        d_model: int = 128,
        n_layers: int | None = None,
        *,
        mixer: str | list = "softmax",
        mixer_options: dict | None = None,
        num_heads: int = 1,
        causal: bool | None = None,
        pooling: str = "mean",
        norm: str = "layernorm",
        ffn: str = "mlp",
        ffn_mult: float = 4.0,
        dropout: float = 0.0,
        position: str = "none",
        max_len: int | None = None,
        pair: bool = False,
        scale_invariant: bool = False,
        shortcuts: bool = True,
        position_options: dict | None = None,
        embedding: str = "token",
        embedding_options: dict | None = None,
        ffn_options: dict | None = None,
        layers: list | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        cfg = ModelConfig.from_dict(
            dict(
                vocab_size=vocab_size,
                num_classes=num_classes,
                d_model=d_model,
                n_layers=n_layers,
                mixer=mixer,
                mixer_options=mixer_options,
                layers=layers,
                num_heads=num_heads,
                causal=causal,
                pooling=pooling,
                norm=norm,
                ffn=ffn,
                ffn_mult=ffn_mult,
                dropout=dropout,
                position=position,
                max_len=max_len,
                pair=pair,
                scale_invariant=scale_invariant,
                shortcuts=shortcuts,
                position_options=position_options,
                embedding=embedding,
                embedding_options=embedding_options,
                ffn_options=ffn_options,
            ),
            kind="classifier",
        )
        self.model_config, self.config = cfg, cfg.to_dict()
        self.pooling, self.pair = pooling, pair
        self.embedding = embedding
        self.backbone = make_backbone(cfg, causal=causal)
        if scale_invariant:
            self.head = SIHead(
                4 * d_model if pair else d_model, num_classes, hidden=d_model if pair else None, norm=norm
            )
        elif pair:
            self.head = nn.Sequential(nn.Linear(4 * d_model, d_model), nn.GELU(), nn.Linear(d_model, num_classes))
        else:
            self.head = nn.Linear(d_model, num_classes)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled representation ``[B, d_model]`` of ``ids: [B, L]``."""
        h = self.backbone(ids, mask)
        if self.embedding == "patches":  # pool over the patch sequence
            mask = self.backbone.output_mask(mask)
        return pool(h, mask, self.pooling)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``ids: [B, L]`` (or ``[B, 2, L]`` when ``pair``) -> logits ``[B, num_classes]``."""
        if self.pair:
            if ids.dim() != 3 or ids.shape[1] != 2:
                raise ValueError(f"a pair classifier expects ids of shape [batch, 2, length], got {tuple(ids.shape)}")
            B, _, L = ids.shape
            z = self.encode(ids.reshape(2 * B, L), None if mask is None else mask.reshape(2 * B, L))
            u, v = z.view(B, 2, -1).unbind(1)
            return self.head(torch.cat([u, v, u * v, u - v], dim=-1))
        return self.head(self.encode(ids, mask))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets)


MODEL_KINDS["classifier"] = SequenceClassifier
