"""ON-LSTM: Shen, Tan, Sordoni & Courville 2019, "Ordered Neurons: Integrating Tree Structures into
Recurrent Neural Networks" (ICLR), eq. 1-14.

A standard LSTM (eq. 1-5: gates ``f, i, o = σ(W x_t + U h_{t-1} + b)``, ``ĉ_t = tanh(...)``) plus two
*master* gates over ``D_m = hidden_size / chunk_size`` chunks of neurons (eq. 9-10):

    cumax(z) = cumsum(softmax(z))                                           (eq. 6-8)
    f̃_t = cumax(W_f̃ x_t + U_f̃ h_{t-1} + b_f̃)        ĩ_t = 1 − cumax(W_ĩ x_t + U_ĩ h_{t-1} + b_ĩ)     # [B, D_m]
    ω_t = f̃_t ∘ ĩ_t                                                          (eq. 11)
    f̂_t = f_t ∘ ω_t + (f̃_t − ω_t)       î_t = i_t ∘ ω_t + (ĩ_t − ω_t)        (eq. 12)
    c_t = f̂_t ∘ c_{t-1} + î_t ∘ ĉ_t        h_t = o_t ∘ tanh(c_t)             (eq. 13)

with each master-gate value shared by the ``chunk_size`` neurons of its chunk. The syntactic
distance of token ``t`` is ``d_t = D_m − Σ_k f̃_tk`` (eq. 14): how much of the ordered memory the
token erases. Trees: top-down splitting at the largest distance
(:func:`longseq.trees.split_by_distance`), the boundary between words ``k`` and ``k + 1`` scored by
``d_{k+1}`` (the distance of the word that opens the new constituent; the official
``test_phrase_induction.py`` likewise drops the first word's distance).

The mixer is one ON-LSTM layer (``hidden_size``, default ``d_model``; ``chunk_size`` C, default 8)
and ``y_t = W_o h_t``. Decisions: one fused input and one fused recurrent projection for all
gates (the official ``ih``/``hh`` layers); the input projections of a whole chunk of tokens are
computed at once, the recurrence token by token; no DropConnect (the paper's regularisation is
the trainer's business here); the paper's LM stacks three layers and reads distances from each
(here: a model of several ``onlstm`` layers, each with its own :meth:`ONLSTM.distances`).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import trees
from .base import Mixer, register


def cumax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``cumsum(softmax(z))`` along ``dim``: monotone non-decreasing, in [0, 1], last entry 1 (eq. 6)."""
    return torch.cumsum(torch.softmax(z, dim=dim), dim=dim)


@register(
    "onlstm",
    family="recurrent",
    paper="Shen et al. 2019, Ordered Neurons: Integrating Tree Structures into Recurrent Neural Networks",
    complexity="O(N)",
    causal=True,
    bidirectional=False,
    step=True,
    heads=False,
)
class ONLSTM(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = True,
        hidden_size: int | None = None,
        chunk_size: int = 8,
    ):
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not causal:
            raise ValueError("onlstm is causal only")
        H = self.hidden_size = int(hidden_size or d_model)
        if chunk_size < 1 or H % chunk_size:
            raise ValueError(f"hidden_size={H} must be a positive multiple of chunk_size={chunk_size}")
        self.chunk_size = int(chunk_size)
        self.n_chunks = H // chunk_size
        G = 2 * self.n_chunks + 4 * H  # master forget, master input, then o, ĉ, i, f
        self.ih = nn.Linear(d_model, G)
        self.hh = nn.Linear(H, G, bias=False)
        self.out = nn.Linear(H, d_model)
        self._last_distances: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_size={self.hidden_size}, chunk_size={self.chunk_size}"

    def _init_state(self, batch_size, device, dtype) -> dict:
        z = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return {"h": z, "c": z.clone()}

    def cell(self, gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """One step from the input projection ``gx [B, G]``: ``(h, c, distance [B])``."""
        Dm, C, H = self.n_chunks, self.chunk_size, self.hidden_size
        g = gx + self.hh(h)
        mf, mi, rest = g[:, :Dm], g[:, Dm : 2 * Dm], g[:, 2 * Dm :]
        f_master = cumax(mf)  # [B, Dm]
        i_master = 1.0 - cumax(mi)  # [B, Dm]
        o, chat, i, f = rest.view(-1, 4, Dm, C).unbind(1)  # each [B, Dm, C]
        o, chat, i, f = torch.sigmoid(o), torch.tanh(chat), torch.sigmoid(i), torch.sigmoid(f)
        w = (f_master * i_master)[:, :, None]  # ω [B, Dm, 1]
        f_hat = f * w + (f_master[:, :, None] - w)
        i_hat = i * w + (i_master[:, :, None] - w)
        c = (f_hat * c.view(-1, Dm, C) + i_hat * chat).reshape(-1, H)
        h = (o.reshape(-1, H)) * torch.tanh(c)
        return h, c, Dm - f_master.sum(-1)  # d_t = D_m − Σ_k f̃_tk (eq. 14)

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        if state is None:
            state = self._init_state(B, x.device, x.dtype)
        h, c = state["h"], state["c"]
        gx = self.ih(x)  # [B, L, G]
        hs, ds = [], []
        for t in range(L):
            h, c, d = self.cell(gx[:, t], h, c)
            hs.append(h)
            ds.append(d)
        self._last_distances = torch.stack(ds, 1).detach()  # [B, L]
        y = self.out(torch.stack(hs, 1))  # [B, L, d_model]
        return y, ({"h": h, "c": c} if return_state else None)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.hidden_size

    @torch.no_grad()
    def distances(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token syntactic distances ``d_t`` (eq. 14) of ``x [B, L, d_model]``: ``[B, L]``."""
        self(x, mask)
        return self._last_distances

    @staticmethod
    def trees_from_distances(distances: torch.Tensor, lengths) -> list[list]:
        """Constituents (span tuples, :mod:`longseq.trees`) per sequence: the split between words
        ``k`` and ``k + 1`` is scored by ``d_{k+1}``."""
        return [trees.split_by_distance(distances[b, 1 : int(n)].tolist()) for b, n in enumerate(lengths)]
