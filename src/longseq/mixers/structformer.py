"""StructFormer's dependency-constrained attention: Shen, Tay, Zheng, Bahri, Metzler & Courville
2021, "StructFormer: Joint Unsupervised Induction of Dependency and Constituency Structure from
Masked Language Modeling" (ACL), sec. 3-4.

Parser network (sec. 4.1): ``parser_layers`` blocks of ``Conv1d(kernel conv_size) -> LayerNorm
(no affine) -> tanh`` over the tokens, then a syntactic distance ``δ_k`` between tokens ``k`` and
``k+1`` (a width-2 convolution -> LayerNorm -> tanh -> linear) and a syntactic height ``τ_i`` per
token (linear -> LayerNorm -> tanh -> linear). Padding: ``τ = −1e9`` on padded tokens and
``δ = +1e9`` after the last real token.

From distances and heights (sec. 4.2; formulas as the official code
``google-research/structformer/structformer.py``, ``compute_block``/``compute_head``/``generate_mask``):

    γ_ik = σ((τ_i − δ_k) · s₀)                         P(boundary k lies inside x_i's smallest constituent)
    F_i(l) = min_{l ≤ k < i} γ_ik  (1 for l ≥ i)        p(l | i) = F_i(l) − F_i(l−1)  for l ≤ i   (F_i(−1) = 0)
    G_i(r) = min_{i ≤ k < r} γ_ik  (1 for r ≤ i)        p(r | i) = G_i(r) − G_i(r+1)  for r ≥ i   (G_i(n) = 0)
    p(j | [l, r]) = softmax_{j ∈ [l, r]}(τ_j · s₁)                              (head of a constituent)
    p_D(j | i) = Σ_{l ≤ i ≤ r} p(l | i) p(r | i) p(j | [l, r]),  p_D(i | i) := 0      (parent of x_i)

with ``s = exp(scaler)`` learned (initial 1). Attention (sec. 3.3, ``layers.MultiheadAttention``):
each head mixes the parent and child relations, ``D_h = w_h,parent · p_D + w_h,child · p_Dᵀ``
(``w_h = softmax`` over the two relations, learned, initial N(0, 0.1)), and replaces the softmax by

    a_hij = σ(q_hi · k_hj / √d_h) · D_h[i, j]                 y = W_o [a_h V_h]_h                  # [B, L, d]

Before building the distribution the distances are shifted by the official "calibration
margin" (the largest ``min(relu(δ_{i−1} − max τ_{i..j}), relu(δ_j − max τ_{i..j}))`` over spans).

Decisions: the parser reads this mixer's input (the official model parses the token embeddings
once and shares the distribution by all layers: build the first layer with it, or one
``structformer`` layer); the calibration margin is taken per sequence (the official code takes one
maximum over the whole batch, which would make a sequence's output depend on its batch-mates);
relations are parent and child (the official default). Cost: O(L³) memory for ``p(l, r | i)``.
:meth:`StructFormerAttention.parse` gives the constituency tree (split at the largest distance,
:func:`longseq.trees.split_by_distance`) and the dependency heads (``argmax_j p_D(j | i)``; the
token of largest height is the root, head −1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import trees
from .base import Mixer, register

BIG = 1e9


class _Conv(nn.Module):
    """Conv1d over tokens ``[B, L, d] -> [B, L, d]``; an even kernel is shifted so that position
    ``i`` covers ``x_{i - k/2 + 1} .. x_{i + k/2}`` (width 2: ``x_i, x_{i+1}``, the official shift)."""

    def __init__(self, d: int, kernel: int):
        super().__init__()
        self.shift = kernel % 2 == 0
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2 if self.shift else (kernel - 1) // 2)

    def forward(self, x):
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return y[:, 1:] if self.shift else y


def dependency_distribution(
    distance: torch.Tensor,
    height: torch.Tensor,
    s_block: torch.Tensor | float = 1.0,
    s_head: torch.Tensor | float = 1.0,
):
    """``p_D(j | i) [B, L, L]`` (parent of ``i``) and ``p(l, r | i) [B, L, L, L]`` from distances
    ``[B, L]`` (``δ_k``: between ``k`` and ``k+1``) and heights ``[B, L]`` (module docstring)."""
    B, L = height.shape
    gamma = torch.sigmoid((height[:, :, None] - distance[:, None, :]) * s_block)  # [B, i, k]
    ones = torch.ones_like(gamma)
    # F_i(l) = min_{l <= k < i} γ_ik: reverse cumulative min of (γ below the diagonal, 1 on and above)
    Fl = (gamma.tril(-1) + ones.triu(0)).flip(-1).cummin(-1).values.flip(-1)  # [B, i, l]
    p_left = (Fl - F.pad(Fl[:, :, :-1], (1, 0), value=0.0)).tril(0)
    # G_i(r) = min_{i <= k < r} γ_ik: exclusive forward cumulative min of (γ on/above the diagonal, 1 below)
    Gm = F.pad((gamma.triu(0) + ones.tril(-1))[:, :, :-1], (1, 0), value=1.0).cummin(-1).values
    p_right = (Gm - F.pad(Gm[:, :, 1:], (0, 1), value=0.0)).triu(0)
    block = p_left[:, :, :, None] * p_right[:, :, None, :]  # [B, i, l, r]
    idx = torch.arange(L, device=height.device)
    inside = (idx[:, None, None] <= idx[None, None, :]) & (idx[None, None, :] <= idx[None, :, None])  # [l, r, j]
    logits = (height * s_head)[:, None, None, :].expand(B, L, L, L).masked_fill(~inside, -1e3 * BIG)
    head_p = torch.softmax(logits, dim=-1)  # [B, l, r, j] (rows l > r are unused: block = 0)
    parent = torch.einsum("bilr,blrj->bij", block, head_p)
    parent = parent.masked_fill(torch.eye(L, dtype=torch.bool, device=height.device), 0.0)
    return parent, block


@register(
    "structformer",
    family="syntactic attention",
    paper="Shen et al. 2021, StructFormer: Joint "
    "Unsupervised Induction of Dependency and Constituency Structure from Masked Language Modeling",
    complexity="O(N^3) (parse), O(N^2) attention",
    causal=False,
    bidirectional=True,
    step=False,
)
class StructFormerAttention(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        conv_size: int = 9,
        parser_layers: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if causal:
            raise ValueError("structformer is bidirectional only")
        if conv_size < 1 or parser_layers < 0:
            raise ValueError(f"conv_size must be >= 1 and parser_layers >= 0, got {conv_size}, {parser_layers}")
        d = d_model
        self.parser = nn.ModuleList(
            [
                nn.Sequential(_Conv(d, conv_size), nn.LayerNorm(d, elementwise_affine=False), nn.Tanh())
                for _ in range(parser_layers)
            ]
        )
        self.distance_ff = nn.Sequential(
            _Conv(d, 2), nn.LayerNorm(d, elementwise_affine=False), nn.Tanh(), nn.Linear(d, 1)
        )
        self.height_ff = nn.Sequential(
            nn.Linear(d, d), nn.LayerNorm(d, elementwise_affine=False), nn.Tanh(), nn.Linear(d, 1)
        )
        self.scaler = nn.Parameter(torch.zeros(2))
        self.rel_weight = nn.Parameter(torch.randn(num_heads, 2) * 0.1)  # [H, (parent, child)]
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    # ---------------------------------------------------------------- parser
    def distances_heights(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """``(δ [B, L], τ [B, L])`` after the calibration margin (module docstring)."""
        B, L, _ = x.shape
        mask = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        nxt = F.pad(mask[:, 1:], (0, 1), value=False)  # a real token follows
        h = x
        for layer in self.parser:
            h = layer(h.masked_fill(~mask[:, :, None], 0.0))
        height = self.height_ff(h).squeeze(-1).masked_fill(~mask, -BIG)
        distance = self.distance_ff(h).squeeze(-1).masked_fill(~nxt, BIG)
        # calibration: hmax[i, j] = max τ_{i..j} (j >= i)
        hm = height[:, None, :].expand(B, L, L)
        hmax = torch.cummax(hm.triu(0) - torch.ones_like(hm).tril(-1) * BIG, dim=-1).values.triu(0)
        left = torch.relu(F.pad(distance[:, :-1, None], (0, 0, 1, 0), value=BIG) - hmax)
        right = torch.relu(distance[:, None, :] - hmax)
        margin = torch.minimum(left, right).triu(0)
        valid = torch.cat([nxt[:, None, :], mask[:, None, :].expand(B, L - 1, L)], dim=1)
        margin = margin.masked_fill(~valid, 0.0).flatten(1).amax(-1)  # [B] (per sequence)
        return distance - margin[:, None], height

    def dependency(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """``p_D(j | i) [B, L, L]`` (parent distribution) for ``x [B, L, d]``."""
        distance, height = self.distances_heights(x, mask)
        s = self.scaler.exp()
        return dependency_distribution(distance, height, s[0], s[1])[0]

    # ---------------------------------------------------------------- mixer
    def _forward(self, x, mask, state, return_state):
        B, L, d = x.shape
        H, Dh = self.num_heads, self.head_dim
        parent = self.dependency(x, mask)  # [B, i, j]
        w = torch.softmax(self.rel_weight, dim=-1)  # [H, 2]
        dep = w[None, :, 0, None, None] * parent[:, None] + w[None, :, 1, None, None] * parent.transpose(1, 2)[:, None]
        q, k, v = self.qkv(x).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)  # each [B, H, L, Dh]
        logits = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # [B, H, L, L]
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], -math.inf)
        a = self.drop(torch.sigmoid(logits) * dep)
        y = (a @ v).transpose(1, 2).reshape(B, L, d)
        return self.out(y), None

    @torch.no_grad()
    def parse(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """``(constituents, heads)`` per sequence: span tuples (:mod:`longseq.trees`) and, per token,
        the index of its parent (−1 for the root, the token of largest height)."""
        B, L, _ = x.shape
        distance, height = self.distances_heights(x, mask)
        parent = self.dependency(x, mask)
        lengths = [L] * B if mask is None else mask.sum(1).tolist()
        out_trees, out_heads = [], []
        for b, n in enumerate(lengths):
            n = int(n)
            out_trees.append(trees.split_by_distance(distance[b, : n - 1].tolist()))
            heads = parent[b, :n, :n].argmax(-1)
            heads[int(height[b, :n].argmax())] = -1
            out_heads.append(heads.tolist())
        return out_trees, out_heads
