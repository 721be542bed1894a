"""``grn``: the graph recurrent network of sentence-state LSTM (S-LSTM) form.

Paper: Zhang, Liu & Song 2018, "Sentence-State LSTM for Text Representation" (ACL), sec. 3.1,
the model that Wang, Yang, Teng, Zhou & Zhang 2022, "Pre-Training a Graph Recurrent Network for
Language Representation" (arXiv 2209.03834, NeurIPS ENLSP workshop) pre-train with MLM: a graph
with one node per token plus one global sentence node, all updated in parallel for T recurrent
steps, so the cost is O(T · L · w · d²): linear in the length, and every token sees both sides.
We follow the S-LSTM equations of Zhang et al. 2018 (the pre-training paper "optimizes the
architecture"; its changes are not reproduced here, see below).

Word node ``i`` at step t (window ``w``; ``h``/``c`` outside the sequence or at padding are 0)::

    ξ_i   = [h_{i-w}^{t-1}; ...; h_i^{t-1}; ...; h_{i+w}^{t-1}]                  # [(2w+1) D]
    ĝ_k   = σ(W_k ξ_i + U_k x_i + V_k g^{t-1} + b_k)    k ∈ {i, l, r, f, s, o}
    u_i   = tanh(W_u ξ_i + U_u x_i + V_u g^{t-1} + b_u)
    i, l, r, f, s = softmax(î, l̂, r̂, f̂, ŝ)            (elementwise, over the five gates)
    c_i^t = l ⊙ c_{i-1}^{t-1} + f ⊙ c_i^{t-1} + r ⊙ c_{i+1}^{t-1} + s ⊙ c_g^{t-1} + i ⊙ u_i
    h_i^t = o ⊙ tanh(c_i^t)

Sentence node (``h̄`` = mean of the real tokens' ``h^{t-1}``)::

    f̂_g = σ(W_g g^{t-1} + U_g h̄ + b_g)        f̂_i = σ(W_f g^{t-1} + U_f h_i^{t-1} + b_f)
    o_g = σ(W_o g^{t-1} + U_o h̄ + b_o)
    f_1..f_n, f_g = softmax(f̂_1, ..., f̂_n, f̂_g)      (elementwise, over the real tokens and g)
    c_g^t = f_g ⊙ c_g^{t-1} + Σ_i f_i ⊙ c_i^{t-1}
    g^t   = o_g ⊙ tanh(c_g^t)

Parameters are shared across the T steps (as in the paper). Output: ``out_proj(h^T)``; the
sentence node's step-T update feeds nothing and is not computed (with T = 1 its parameters get
no gradient).

Decisions (the paper leaves them open, or we depart knowingly):

* ``steps`` T = 4 by default: the paper chooses T on development data (we did not verify its
  chosen value, which we recall as larger); each step costs one pass over the sequence, so a CPU
  default is small.
  ``window`` w = 1 is the paper's default window.
* Gates as written in the paper: sigmoid values normalised by a softmax. Since σ ∈ (0, 1) the
  softmax needs no max-subtraction: ``exp`` of values in (0, 1) cannot overflow.
* Initial states: ``h^0 = c^0 = x`` (the block input) and ``g^0 = c_g^0 = mean(x)`` over the real
  tokens, so the first step already exchanges the tokens' content (zero initial states would
  make step 1 see only ``x_i``).
* Boundaries: the paper adds ``<s>``/``</s>`` nodes; we use zero states outside the sequence, and
  padded positions are held at zero and left out of ``h̄`` and of the sentence softmax, so a
  padded batch gives each sequence's own result (the conformance suite checks it).
* The cell's neighbour terms use the adjacent cells (``c_{i±1}``) for any ``w``; the window
  widens ``ξ`` (the hidden-state context), as in the paper's eq. for window size.
* Not reproduced from Wang et al. 2022: their per-layer feed-forward/residual arrangement is the
  longseq block around this mixer (pre-norm residual + FFN), and stacking layers is
  ``n_layers``; no causal or recurrent-decoding mode (the sentence node reads the whole sequence).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import Mixer, register


def grn_flops(
    L: int, d_model: int, num_heads: int = 1, causal: bool = False, *, steps: int = 4, window: int = 1
) -> float:
    """Forward FLOPs per sequence: per step the word gates (2w+1+2) D x 7D and the sentence gates."""
    D = d_model
    per_step = 2 * L * ((2 * window + 1) * D * 7 * D + D * 7 * D + D * D) + 2 * 5 * D * D
    return float(steps * per_step + 2 * L * D * D)


def shift(t: torch.Tensor, k: int) -> torch.Tensor:
    """``out[:, i] = t[:, i + k]`` with zeros outside ``[0, L)``: ``t`` ``[B, L, D]``."""
    if k == 0:
        return t
    L = t.shape[1]
    if abs(k) >= L:
        return torch.zeros_like(t)
    if k > 0:
        return F.pad(t[:, k:], (0, 0, 0, k))
    return F.pad(t[:, :k], (0, 0, -k, 0))


@register(
    "grn",
    family="graph recurrent network",
    paper="Zhang, Liu & Song 2018, Sentence-State LSTM for Text Representation (pre-trained: Wang et al. 2022)",
    complexity="O(T·N·w)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=grn_flops,
    heads=False,
)
class GraphRecurrentNetwork(Mixer):
    """S-LSTM: token nodes with a window of neighbours and one sentence node, T gated steps."""

    def __init__(self, d_model, *, num_heads=1, causal=False, steps=4, window=1, dropout=0.0):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"grn: steps (recurrent steps T) must be a positive int, got {steps!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"grn: window (neighbours on each side) must be a positive int, got {window!r}")
        D = d_model
        self.steps, self.window, self.dropout = steps, window, float(dropout)
        # word node: 6 gates (i, l, r, f, s, o) + the candidate u, from ξ, x and g
        self.word_xi = nn.Linear((2 * window + 1) * D, 7 * D, bias=False)  # W
        self.word_x = nn.Linear(D, 7 * D)  # U (+ b)
        self.word_g = nn.Linear(D, 7 * D, bias=False)  # V
        # sentence node: f̂_g, o_g from (g, h̄); f̂_i from (g, h_i)
        self.sent_g = nn.Linear(D, 3 * D, bias=False)  # W_g, W_o, W_f
        self.sent_hbar = nn.Linear(D, 2 * D)  # U_g, U_o (+ b_g, b_o)
        self.sent_h = nn.Linear(D, D)  # U_f (+ b_f)
        self.out_proj = nn.Linear(D, D)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", steps={self.steps}, window={self.window}"

    def _forward(self, x, mask, state, return_state):
        B, L, D = x.shape
        m = (
            torch.ones(B, L, 1, dtype=x.dtype, device=x.device) if mask is None else mask[..., None].to(x.dtype)
        )  # [B, L, 1]
        n = m.sum(1).clamp_min(1.0)  # [B, 1]
        h, c = x, x  # [B, L, D]  (x is 0 at pads)
        g = (x * m).sum(1) / n  # [B, D]
        cg = g
        ux = self.word_x(x)  # [B, L, 7D]  step-invariant
        w = self.window
        for t in range(self.steps):
            xi = torch.cat([shift(h, k) for k in range(-w, w + 1)], dim=-1)  # [B, L, (2w+1)D]
            pre = self.word_xi(xi) + ux + self.word_g(g)[:, None]  # [B, L, 7D]
            gates, u = pre[..., : 6 * D].sigmoid(), torch.tanh(pre[..., 6 * D :])
            gi, gl, gr, gf, gs, go = gates.split(D, dim=-1)  # each [B, L, D]
            e = torch.stack([gi, gl, gr, gf, gs]).exp()  # [5, B, L, D]
            e = e / e.sum(0)  # softmax over the 5 gates
            c_new = e[1] * shift(c, -1) + e[3] * c + e[2] * shift(c, 1) + e[4] * cg[:, None] + e[0] * u
            h_new = go * torch.tanh(c_new)  # [B, L, D]
            if t == self.steps - 1:  # g^T would feed no output: the last sentence update is skipped
                h = h_new * m
                break
            # sentence node, from the previous step's states
            hbar = (h * m).sum(1) / n  # [B, D]
            sg = self.sent_g(g)  # [B, 3D]
            sh = self.sent_hbar(hbar)  # [B, 2D]
            fg = (sg[:, :D] + sh[:, :D]).sigmoid()  # [B, D]
            og = (sg[:, D : 2 * D] + sh[:, D:]).sigmoid()  # [B, D]
            fi = (sg[:, None, 2 * D :] + self.sent_h(h)).sigmoid()  # [B, L, D]
            efg, efi = fg.exp(), fi.exp() * m  # pads out of the softmax
            cg_new = (efg * cg + (efi * c).sum(1)) / (efg + efi.sum(1))  # [B, D]
            g = og * torch.tanh(cg_new)
            h, c, cg = h_new * m, c_new * m, cg_new
        y = self.out_proj(h)
        if self.dropout and self.training:
            y = F.dropout(y, self.dropout)
        return y, None
