"""Evolving attention (Wang et al., ICML 2021, "Evolving Attention with Residual Convolutions",
arXiv 2102.12895; official code github.com/pkuyym/EvolvingAttention).

Each layer's pre-softmax attention logits are a residual convolution of the previous layer's
logits mixed with its own scaled dot products. With ``S_l = Q_l K_l^T / sqrt(d_head)`` (one
``[heads, N, N]`` map per sequence, the heads being the channels of a 2-D image):

    first layer:  logits_1 = S_1
    layer l > 1:  A_l      = (1 - beta) * S_l + beta * logits_{l-1}              (residual link)
                  logits_l = alpha * act(Conv3x3_{H->H}(A_l)) + (1 - alpha) * A_l   (residual conv)
    output:       softmax(logits_l) V_l, and logits_l is handed to layer l + 1.

These are the two residual equations of the paper's Section 3 (evolving attention) in the form
of the official code. Decisions (checked against the official code; the paper text itself was not
reachable from here, so its equation numbers and NLP hyper-parameters are not cited):

* **Names.** ``alpha`` and ``beta`` follow the official code (``asconv2d_fixed_padding`` in
  ``EAResnet50/official/resnet/resnet_model.py`` and ``EAAugmentedConv1d`` in
  ``EA_DC_Transformer``): ``beta`` weighs the previous layer's logits, ``alpha`` the convolution
  branch. (From memory, the paper's notation swaps the two letters: its alpha mixes in the
  previous layer, its beta weighs the convolution. Not verified against the paper text.)
* **Defaults** ``alpha=0.5, beta=0.3``: the authors' only sequence-model example (README of the
  official code, EA-DC-Transformer). EA-ResNet uses ``alpha=1, beta=0.5``.
* **What is carried.** The conv input is the previous layer's *logits after its own mixing*
  (pre-softmax), not its attention probabilities: the code appends the mixed ``logits`` to
  ``prev_atts`` before the softmax.
* **Convolution.** A full ``H -> H`` 3x3 ``Conv2d`` over the ``[H, N, N]`` map with bias (both
  codes), zero padding 1; weights ~ N(0, 1/fan_in) and zero bias like the code's TF
  ``variance_scaling_initializer``. Activation ``act``: ReLU (EA-ResNet, default) or
  ``leaky_relu`` (EA-DC-Transformer).
* **First layer / standalone.** With no previous logits (first layer of a stack, a mixer used on
  its own, or a layer after a non-evolving one) the layer is plain softmax attention and its conv
  is unused: in both official codes the first attention layer has no convolution.
* **Masking (ours; the paper is bidirectional).** Logits at pairs that may not interact (padded
  keys or queries, future keys) are set to 0 before the convolution, and the convolved logits are
  masked to ``-inf`` after it, so the conv neither reads nor writes across a mask.
* **Causal version (ours).** Masking future keys is not enough: a centred 3x3 kernel would also
  read row ``i + 1`` (the next, future query) into row ``i``. The causal conv is therefore shifted
  along the query axis, reading rows ``i - 2 .. i`` (pad 2 rows on top) and keys ``j - 1 .. j + 1``
  (centred; key ``i + 1`` is a masked zero). Row ``i`` of ``logits_l`` then depends on tokens
  ``<= i`` only, through the whole stack.
* **Step / KV cache.** Exact: the state keeps the KV cache plus the last two rows of ``A_l`` (the
  rows the shifted kernel reads above the new query), so ``step`` equals ``forward``.
* **Cross-layer hook.** The previous logits arrive through ``carry``, a dict that
  :class:`~longseq.models.backbone.Block` passes, for one forward pass, to consecutive layers whose
  mixer is registered with ``uses_carry=True`` (key ``"attn_logits"``, ``[B, H, L_q, L_k]``: rows of the current
  queries). Gradients flow through it (the residual path of the paper's Figure 2).

Cost: O(N^2) time and memory by design (the logits are materialised, the conv adds
``2 * 9 * H^2 * N^2`` FLOPs per layer); incompatible with fused (flash) attention kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn.kvcache import kv_init
from ..utils.validate import check_choice, check_number
from .base import register
from .softmax import SoftmaxAttention, attention_flops, rotate_and_cache

CARRY_KEY = "attn_logits"
ACTIVATIONS = {"relu": F.relu, "leaky_relu": F.leaky_relu}


def evolving_flops(L: int, d: int, h: int, causal: bool) -> float:
    conv = 2 * 9 * h * h * L * L  # 3x3 H -> H convolution over the [H, L, L] map
    mix = 6 * h * L * L  # two convex mixes, activation, softmax
    return attention_flops(L, d, h, causal) + float(conv + mix)


def pair_mask(mask: torch.Tensor | None, L_q: int, L_k: int, causal: bool, device) -> torch.Tensor | None:
    """Bool ``[B|1, 1, L_q, L_k]``: real (query, key) pairs that may interact; None = all.

    Queries are the last ``L_q`` of ``L_k`` positions. Unlike ``softmax.allowed_keys`` the rows of
    padded queries are all False, so nothing of a padded query reaches the convolution.
    """
    if mask is None and not causal:
        return None
    q_pos = torch.arange(L_k - L_q, L_k, device=device)[:, None]  # [Lq, 1]
    k_pos = torch.arange(L_k, device=device)[None, :]  # [1, Lk]
    ok = (k_pos <= q_pos) if causal else torch.ones(L_q, L_k, dtype=torch.bool, device=device)
    ok = ok[None, None]  # [1, 1, Lq, Lk]
    if mask is not None:
        ok = ok & mask[:, None, None, :] & mask[:, None, L_k - L_q :, None]
    return ok


@register(
    "evolving",
    family="exact attention",
    paper="Wang et al. 2021, Evolving Attention with Residual Convolutions (ICML)",
    complexity="O(N^2)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=evolving_flops,
    uses_carry=True,
)
class EvolvingAttention(SoftmaxAttention):
    """Softmax attention whose logits evolve from the previous layer's through a residual 3x3 conv.

    Options: ``alpha`` (weight of the conv branch, code naming), ``beta`` (weight of the previous
    layer's logits), ``activation`` (``relu`` | ``leaky_relu``), plus ``rope``, ``dropout`` and
    ``bias`` of :class:`SoftmaxAttention`. Consumes/produces ``carry["attn_logits"]``.
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        alpha: float = 0.5,
        beta: float = 0.3,
        activation: str = "relu",
        rope: bool = False,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, rope=rope, dropout=dropout, bias=bias)
        check_number("alpha", alpha, min=0.0, max=1.0, owner="evolving")
        check_number("beta", beta, min=0.0, max=1.0, owner="evolving")
        check_choice("activation", activation, sorted(ACTIVATIONS), owner="evolving")
        self.alpha, self.beta, self.activation = float(alpha), float(beta), activation
        H = num_heads
        self.conv = nn.Conv2d(H, H, 3, bias=True)
        nn.init.normal_(self.conv.weight, std=1.0 / math.sqrt(9 * H))
        nn.init.zeros_(self.conv.bias)
        self._carry: dict | None = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, beta={self.beta}, activation={self.activation}"

    # ------------------------------------------------------------------ carry plumbing
    def forward(self, x, mask=None, *, state=None, return_state=False, carry: dict | None = None):
        """As :meth:`Mixer.forward`; ``carry`` (a dict shared by consecutive layers) brings the
        previous layer's logits under ``"attn_logits"`` and receives this layer's."""
        self._carry = carry
        try:
            return super().forward(x, mask, state=state, return_state=return_state)
        finally:
            self._carry = None

    def step(self, x_t, state, carry: dict | None = None):
        self._carry = carry
        try:
            return super().step(x_t, state)
        finally:
            self._carry = None

    # ------------------------------------------------------------------ computation
    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        q, k, v, new_state = rotate_and_cache(q, k, v, self.rope, state)
        L_k = k.shape[2]
        ok = pair_mask(mask, L, L_k, self.causal, x.device)  # [B|1, 1, L, Lk] | None
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * self.head_dim**-0.5  # [B, H, L, Lk]

        carry = self._carry
        prev = None if carry is None else carry.get(CARRY_KEY)
        rows = None
        if prev is None:
            logits = scores  # first layer: plain attention
        else:
            if prev.shape != scores.shape:
                raise ValueError(
                    f"evolving: previous layer's logits have shape {tuple(prev.shape)}, "
                    f"expected {tuple(scores.shape)} (same batch, heads and positions)"
                )
            a_in = (1.0 - self.beta) * scores + self.beta * prev  # residual link, [B, H, L, Lk]
            if ok is not None:
                a_in = a_in.masked_fill(~ok, 0.0)
            conv, rows = self._conv(a_in, None if state is None else state.get("rows"))
            logits = self.alpha * ACTIVATIONS[self.activation](conv) + (1.0 - self.alpha) * a_in
        if carry is not None:
            carry[CARRY_KEY] = logits

        if ok is not None:
            diag = torch.arange(L_k - L, L_k, device=x.device)[:, None] == torch.arange(L_k, device=x.device)
            logits = logits.masked_fill(~(ok | diag), float("-inf"))  # padded queries keep their diagonal
        attn = logits.softmax(dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, self.dropout)
        o = torch.einsum("bhij,bhjd->bhid", attn, v)  # [B, H, L, Dh]
        if new_state is not None:
            new_state["rows"] = rows if rows is not None else state.get("rows")
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    def _conv(self, a_in: torch.Tensor, rows: torch.Tensor | None):
        """3x3 conv of the masked map ``a_in: [B, H, L, Lk]`` -> (conv ``[B, H, L, Lk]``, last rows).

        Causal: the kernel reads query rows ``i - 2 .. i``; the two rows above the first query come
        from ``rows: [B, H, 2, Lk']`` (earlier keys only; the new keys are future to them, i.e. 0)
        or are zeros. Returns the two last input rows for the next call (None if bidirectional).
        """
        if not self.causal:
            return F.conv2d(a_in, self.conv.weight, self.conv.bias, padding=1), None
        B, H, L, L_k = a_in.shape
        if rows is None:
            rows = a_in.new_zeros(B, H, 2, L_k)
        else:
            rows = F.pad(rows, (0, L_k - rows.shape[-1]))
        full = torch.cat([rows, a_in], dim=2)  # [B, H, L + 2, Lk]
        conv = F.conv2d(F.pad(full, (1, 1, 0, 0)), self.conv.weight, self.conv.bias)
        return conv, full[:, :, -2:]

    def _init_state(self, batch_size, device, dtype):
        return kv_init(batch_size, self.num_heads, self.head_dim, self.head_dim, device, dtype)

    def state_size(self, seq_len):
        return 2 * self.d_model * seq_len + 2 * self.num_heads * seq_len
