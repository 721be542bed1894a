"""Scale-invariant attention of SIBERT (Li, Bhojanapalli, Zaheer, Reddi, Kumar, ICML 2022,
"Robust Training of Neural Networks Using Scale Invariant Architectures", arXiv 2202.00980, sec. 5):
softmax replaced by a row-normalised ReLU,

    A_ij = relu(q_i . k_j) / sum_{j' allowed} relu(q_i . k_j')        (0 for a row whose sum is 0)
    y_i  = W_O sum_j A_ij v_j,   q = x W_Q,  k = x W_K,  v = x W_V

ReLU is positively homogeneous, so ``relu(c q . k) = c relu(q . k)`` for c > 0 and the row
normalisation cancels c: the output is invariant (degree 0) to rescaling W_Q or W_K, and
homogeneous of degree 1 in W_V and W_O. In the scale-invariant model
(:mod:`longseq.models.sibert`) the branch output is normalised before the residual sum, which
makes the whole network invariant to rescaling each of the four matrices.

Decisions (the paper's text beyond its abstract was not available to check; the points below
follow the project's reference notes, written from memory of the paper):
* No 1/sqrt(d_head) temperature: any constant factor on q . k cancels in the normalisation.
* No biases (a bias breaks homogeneity); W_Q, W_K, W_V, W_O are separate matrices, so each is
  its own scale-invariant parameter group.
* A row whose allowed scores are all <= 0 attends to nothing and outputs 0 (no epsilon in the
  denominator, which would break exact invariance). A query always may see its own key.
* RoPE (optional) rotates q and k by orthogonal maps, which keeps the homogeneity.

Cost: exact attention, O(N^2) time and memory (the N x N score matrix is materialised, as in
``softmax_naive``: there is no fused kernel for a ReLU-normalised attention).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..nn.kvcache import kv_init
from ..nn.rotary import RotaryEmbedding
from .base import Mixer, register
from .softmax import allowed_keys, attention_flops, rotate_and_cache


def relu_normalised_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None
) -> torch.Tensor:
    """q: [B, H, Lq, Dh], k/v: [B, H, Lk, Dh], allowed: bool [B|1, 1, Lq, Lk] or None -> [B, H, Lq, Dh]."""
    scores = torch.einsum("bhid,bhjd->bhij", q, k).relu()  # [B, H, Lq, Lk]
    if allowed is not None:
        scores = scores * allowed.to(scores.dtype)
    den = scores.sum(-1, keepdim=True)  # [B, H, Lq, 1]
    attn = scores / torch.where(den > 0, den, torch.ones_like(den))
    return torch.einsum("bhij,bhjd->bhid", attn, v)


@register(
    "si_attention",
    family="exact attention",
    paper="Li et al. 2022, Robust Training of Neural Networks Using Scale Invariant Architectures (SIBERT)",
    complexity="O(N^2)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=attention_flops,
)
class ScaleInvariantAttention(Mixer):
    """Multi-head ReLU-normalised attention (output invariant to rescaling W_Q or W_K)."""

    def __init__(self, d_model: int, *, num_heads: int = 1, causal: bool = False, rope: bool = False) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        q, k, v = (rearrange(f(x), "b l (h d) -> b h l d", h=self.num_heads) for f in (self.q, self.k, self.v))
        q, k, v, new_state = rotate_and_cache(q, k, v, self.rope, state)
        causal = self.causal and L > 1  # one new token sees the whole cache
        allowed = allowed_keys(mask, L, k.shape[2], causal, x.device)
        o = relu_normalised_attention(q, k, v, allowed)  # [B, H, L, Dh]
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    def _init_state(self, batch_size, device, dtype):
        return kv_init(batch_size, self.num_heads, self.head_dim, self.head_dim, device, dtype)

    def state_size(self, seq_len):
        return 2 * self.d_model * seq_len
