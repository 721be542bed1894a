"""Masked language model: a bidirectional mixer stack with BERT's MLM head tied to the embeddings.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", sec. 3.1 (task #1, masked LM) and the official code's ``get_masked_lm_output``:
the final hidden states go through a dense layer ``d_model -> d_model``, GELU and LayerNorm (the
"transform"), then the output projection is the *transposed token-embedding table* plus a
per-token output bias::

    h  = Backbone(ids, mask)                         # [B, L, D]
    t  = LayerNorm(GELU(h W_t + b_t))                # [B, L, D]
    logits = t E^T + b_out                           # [B, L, V]   (E: the embedding table [V, D])

The loss is the mean cross-entropy over the masked positions only (``targets`` hold ``-100``
elsewhere). Masking itself is data-side (:mod:`longseq.tasks.mlm`), so this model only reads
``(ids, mask)``; its metrics (masked-token accuracy, bits per masked byte) are the trainer's
evaluation sums over the non-ignored targets.

Decisions: every layer must be bidirectional (``causal=False`` for every mixer; a causal-only mixer
such as ``h3`` is refused, since an MLM needs both sides of a masked token); only the plain
``token`` embedding can be tied (H-SoftPOS and patches are causal/image front-ends) and SIBERT's
scale-invariant stack is not offered here. The tied table is initialised N(0, 0.02²) as BERT's
``initializer_range`` (the official code), not torch's N(0, 1). The encoder (``self.backbone``) is what
:func:`longseq.models.finetune.load_encoder` hands to a :class:`SequenceClassifier`; the head
(``mlm_transform``, ``mlm_norm``, ``mlm_bias``) stays behind.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import mixers
from ..utils.constants import IGNORE as IGNORE_INDEX
from .base import LongseqModel, make_backbone, model_class
from .config import MODEL_KINDS, ModelConfig


@model_class
class MaskedLM(LongseqModel):
    """Bidirectional stack -> BERT's MLM head tied to the token table (``kind="mlm"`` of
    :class:`~longseq.models.config.ModelConfig`)."""

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
        shortcuts: bool = True,
        position_options: dict | None = None,
        ffn_options: dict | None = None,
        layers: list | None = None,
        scale_invariant: bool = False,
        embedding: str = "token",
        embedding_options: dict | None = None,
    ) -> None:
        super().__init__()
        if scale_invariant or embedding != "token" or embedding_options:
            raise ValueError(
                "MaskedLM takes the plain token embedding (no scale_invariant, embedding options "
                f"or embedding={embedding!r})"
            )
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
                shortcuts=shortcuts,
                position_options=position_options,
                ffn_options=ffn_options,
            ),
            kind="mlm",
        )
        for i, sp in enumerate(cfg.layers):
            if not mixers.spec(sp.mixer).bidirectional:
                raise ValueError(
                    f"MaskedLM needs bidirectional mixers; layer {i}'s mixer {sp.mixer!r} is causal "
                    f"only (bidirectional mixers: "
                    f"{', '.join(n for n in mixers.names() if mixers.spec(n).bidirectional)})"
                )
        self.model_config, self.config = cfg, cfg.to_dict()
        self.backbone = make_backbone(cfg, causal=False)
        self.mlm_transform = nn.Linear(d_model, d_model)
        self.mlm_norm = nn.LayerNorm(d_model)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab_size))
        # BERT's initializer_range: the tied table ~ N(0, 0.02^2), so the initial logits are O(0.1)
        # (torch's N(0, 1) default would give logits of std sqrt(d_model) and a loss far above ln V)
        nn.init.normal_(self.backbone.embed.weight, std=0.02)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's hidden states ``[B, L, d_model]`` (what fine-tuning starts from)."""
        return self.backbone(ids, mask)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``ids: [B, L]`` -> logits ``[B, L, vocab_size]``."""
        h = self.backbone(ids, mask)  # [B, L, D]
        t = self.mlm_norm(F.gelu(self.mlm_transform(h)))  # [B, L, D]
        return F.linear(t, self.backbone.embed.weight, self.mlm_bias)  # [B, L, V]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the masked positions (targets != -100)."""
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


MODEL_KINDS["mlm"] = MaskedLM
