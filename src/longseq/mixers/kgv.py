"""KgV attention of Anthe (Herranz-Celotti & Rrapaj 2023, "Less is More! A slim architecture for
optimal language translation", arXiv 2305.10991, sec. 3 "KgV"; official TF code: flag
``gateattention`` of ``neural_models_tf/attentions.py``).

Softmax attention in which the query weight is moved from the score path to a sigmoid gate on
the values (no extra parameters compared with multi-head attention):

    Q = x                                  (not projected; split into heads)
    K = x W_k
    V = (x * sigmoid(x W_q)) W_v           (the gate multiplies the value INPUT, before W_v)
    y = concat_h softmax(Q_h K_h^T / sqrt(d_head) + mask) V_h  W_o

Computed with ``scaled_dot_product_attention`` (O(N^2) time; O(N) memory where fused kernels
exist). The gate is per token, so ``step`` caches the gated values: the state is an ordinary KV
cache of K and V.

Decisions on ambiguous points:

* Self-attention only. In the official encoder-decoder, cross-attention gates the encoder
  output (length N_src) with ``sigmoid(W_q decoder_state)`` (length N_tgt) elementwise, which only
  runs because the data pipeline pads source and target to the same length (position i of the
  decoder gates position i of the source). That pairing has no meaning for sequences of different
  lengths, so longseq's mixer interface (one input ``x``) implements the self-attention case,
  where all three inputs are ``x``.
* Gate order: the code's default order 'qkv' ("query-g-value"); other orders are not offered.
* ``rope=True`` rotates the (unprojected) queries and the keys per head (RoFormer) — an option,
  off by default; Anthe uses absolute H-SoftPOS embeddings outside the mixer.
* Projections: ``proj`` (``dense`` default | ``tensor_chain`` | ``butterfly``, options in
  ``proj_options``, see :func:`longseq.nn.linear.make_linear`) is the linear kind of W_q (gate),
  W_k and W_v. Anthe uses ``proj="tensor_chain"`` with ``proj_options={"ratio": 0.07}`` (length 2)
  and keeps W_o dense, hence ``proj_out=False`` by default (``True`` factorises W_o too).
  Tensor chains save parameters, not FLOPs. ``bias`` adds biases to all projections (Keras Dense
  default is bias=True; off by default here like ``softmax``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn.kvcache import kv_append, kv_init
from ..nn.linear import make_linear
from ..nn.rotary import RotaryEmbedding
from ..utils.validate import check_probability
from .base import Mixer, register
from .softmax import allowed_keys, attention_flops


def kgv_flops(L: int, d: int, h: int, causal: bool) -> float:
    # Same as softmax attention: the unused query projection is replaced by the gate projection.
    return attention_flops(L, d, h, causal) + 2.0 * L * d  # + gate sigmoid/product (elementwise)


@register(
    "kgv",
    family="gated attention",
    paper="Herranz-Celotti & Rrapaj 2023, Less is More! A slim architecture for optimal language translation (Anthe, KgV)",
    complexity="O(N^2)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=kgv_flops,
)
class KgVAttention(Mixer):
    """Anthe's KgV self-attention: unprojected queries, values gated by ``sigmoid(W_q x)``."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        rope: bool = False,
        dropout: float = 0.0,
        bias: bool = False,
        proj: str = "dense",
        proj_options: dict | None = None,
        proj_out: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        lin = lambda: make_linear(proj, d_model, d_model, bias, **(proj_options or {}))  # noqa: E731
        self.gate = lin()  # W_q, re-purposed as the value gate
        self.key = lin()  # W_k
        self.value = lin()  # W_v
        self.out = lin() if proj_out else nn.Linear(d_model, d_model, bias=bias)  # W_o
        self.rope = RotaryEmbedding(self.head_dim) if rope else None
        self.dropout = float(check_probability("dropout", dropout, owner=self.spec.name))

    def qkv(self, x: torch.Tensor):
        """``x: [B, L, d]`` -> q, k, v ``[B, H, L, Dh]`` (before RoPE)."""
        v = self.value(x * torch.sigmoid(self.gate(x)))  # [B, L, d]
        split = lambda t: rearrange(t, "b l (h d) -> b h l d", h=self.num_heads)  # noqa: E731
        return split(x), split(self.key(x)), split(v)

    def _forward(self, x, mask, state, return_state):
        L = x.shape[1]
        q, k, v = self.qkv(x)  # [B, H, L, Dh]
        offset = 0 if state is None else state["len"]
        if self.rope is not None:
            q, k = self.rope(q, offset), self.rope(k, offset)
        new_state = None
        if state is not None:
            k, v, new_state = kv_append(state, k, v)  # [B, H, offset + L, Dh]
        L_k = k.shape[2]
        p = self.dropout if self.training else 0.0
        if mask is None and self.causal and L_k == L:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            allowed = allowed_keys(mask, L, L_k, self.causal and L > 1, x.device)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    def _init_state(self, batch_size, device, dtype):
        return kv_init(batch_size, self.num_heads, self.head_dim, self.head_dim, device, dtype)

    def state_size(self, seq_len):
        return 2 * self.d_model * seq_len
