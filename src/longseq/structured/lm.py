"""``HMMLanguageModel``: a neural (optionally low-rank) HMM behind the ``CausalLM`` interface.

The trainer, ``longseq train --model hmm`` and ``evaluate`` call ``model(ids, mask) -> [B, L, V]``
and ``model.loss(logits, targets)``. Here the "logits" are the HMM's exact next-token
log-probabilities ``log p(x_{t+1} | x_1..x_t)`` (the predictive distribution ``(alpha_t^T A) O`` of
the normalised forward vector, :meth:`longseq.structured.hmm.HMM.next_token_log_probs`); they are
already normalised, so the cross-entropy the trainer computes (a log-softmax of them) is exactly
``-log p(target | prefix)`` and bits per byte are comparable with the mixer models. The
sum of these over a window equals ``HMM.log_likelihood`` of the window minus the log-probability
of its first token (which, as for every causal LM on these tasks, is conditioned on but not
scored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.base import LongseqModel, model_class
from ..utils.constants import IGNORE
from .hmm import HMM


@model_class
class HMMLanguageModel(LongseqModel):
    def __init__(
        self,
        vocab_size: int,
        num_states: int = 256,
        *,
        rank: int | None = None,
        feature_map: str = "exp",
        emb_dim: int = 128,
        init_std: float | None = 0.3,
        learn_projection: bool = True,
    ):
        super().__init__()
        self.config = {
            "vocab_size": vocab_size,
            "num_states": num_states,
            "rank": rank,
            "feature_map": feature_map,
            "emb_dim": emb_dim,
            "init_std": init_std,
        }
        self.hmm = HMM(
            num_states,
            vocab_size,
            rank=rank,
            feature_map=feature_map,
            emb_dim=emb_dim,
            init_std=init_std,
            learn_projection=learn_projection,
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``ids: [B, L]`` -> next-token log-probabilities ``[B, L, V]``. Padding (``mask`` False) can
        only follow the real tokens, so it never changes the predictions for them; padded ids are
        read as token 0."""
        if mask is not None:
            if mask.shape != ids.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match ids shape {tuple(ids.shape)}")
            ids = ids.masked_fill(~mask.bool(), 0)
        return self.hmm.next_token_log_probs(ids)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def build_hmm_lm(vocab_size: int, options: dict | None = None) -> HMMLanguageModel:
    """``--model hmm --model-option num_states=4096,rank=256``: the options are the constructor's
    keywords; an unknown one is a ValueError listing the allowed ones."""
    options = dict(options or {})
    allowed = ("num_states", "rank", "feature_map", "emb_dim", "init_std", "learn_projection")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown HMM option(s) {unknown}; allowed: {', '.join(allowed)}")
    return HMMLanguageModel(vocab_size, **options)
