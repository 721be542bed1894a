"""Transformer-LS: long-short attention (Zhu, Ping, Xiao, Shoeybi, Goldstein, Anandkumar,
Catanzaro, NeurIPS 2021, "Long-Short Transformer: Efficient Transformers for Language and
Vision", arXiv 2107.02192; official code NVIDIA/transformer-ls).

Each query attends, under ONE softmax, to two key sets (sec. 3.3, eq. 5):

* long-range keys from a dynamic low-rank projection (sec. 3.1, eq. 3):
  ``P = softmax_positions(X W_P) in R^{N x r}`` per head, ``K_bar = P^T K``, ``V_bar = P^T V``;
* short-term keys of a segment-wise sliding window (sec. 3.2): the sequence is cut into
  segments of ``w`` tokens and a query of segment s sees positions ``[s w - w/2, (s+1) w + w/2)``;

    A = softmax([Q K_bar^T ; Q K_win^T] / sqrt(d_head)),   out = A_long V_bar + A_win V_win

with DualLN (sec. 3.3): one LayerNorm (over the concatenated heads) for the projected keys and
values (LN_L) and another for the window keys and values (LN_S). Cost O(N (r + 2w) d).

Causal form (sec. 3.4, "autoregressive" code ChunkedLSAttention): the dynamic projection is
applied per chunk of ``l`` tokens (``chunk_size``): ``P_c = softmax over the l positions of
X_c W_P`` gives r compressed keys per chunk, and a query at t sees the compressed keys of the
chunks strictly before its own chunk, plus a window of exactly the last ``w`` tokens (itself
included). Cost O(N (N r / l + w) d): sub-quadratic by the factor r / l, not linear.

Implementation: bidirectionally, the window part uses the shared block-local kernel
``block_gather_attention`` of ``longseq.ops`` (half-segment blocks) with its per-query
log-sum-exp, and the long-range part is merged exactly through ``merge_attention``. Causally,
both key sets go through one softmax in :func:`longseq.ops.long_short.causal_long_short_attention`, a flash-attention-style
kernel over query blocks with a recomputing backward: a block scores only the prefix of
compressed keys it may see and the window band around it, so memory is O(N d) (the dense
``N x N r / l`` scores of a plain implementation made the memory grow faster than linearly in N;
benchmarks/notes/2026-12-08-docstring-timings.md).
Both are tested against the literal single softmax over the union in
tests/test_transformer_ls.py.

Decisions on ambiguous points:

* P is computed from X (the code's ``dconv_fc: d -> H r``), not from K; padded positions get
  -inf before the position softmax, so they carry no weight in K_bar, V_bar. A chunk with no
  real token is never attended to (causal form).
* DualLN follows the autoregressive code and the paper: LN_L after the projection, LN_S on the
  window keys/values, each shared by keys and values (as remembered from the code, not re-checked); the LRA code's extra LayerNorm before
  the projection is not used.
* Positions: the official causal code adds Transformer-XL relative terms; they are not
  implemented. ``rope=True`` instead rotates queries and WINDOW keys (the long-range keys mix
  positions, so the long-range scores use the unrotated queries). Off by default.
* Defaults: ``window=128`` (even, segment size of the bidirectional form / window of the causal
  one); ``rank`` r = 32 bidirectional, r = 1 causal, with ``chunk_size`` l = 16 (the enwik8
  setting). Causally the compressed keys number N r / l, so r <= l is required.
* No Transformer-XL memory: a recurrent ``state`` continues the sequence instead (last w - 1
  window keys/values, the compressed keys of all completed chunks, the current chunk's raw
  keys/values/projection logits).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..nn.rotary import RotaryEmbedding
from ..ops import block_gather_attention, merge_attention
from ..ops.long_short import causal_long_short_attention
from ..utils.validate import check_int
from .base import Mixer, register

# Queries per super-block of the causal kernel (rounded down to a multiple of the window, at least
# one window): 1024 keeps each block's tensors a few MB at d_model 256 (cache-sized, few ops).
QUERY_BLOCK = 1024


def transformer_ls_flops(
    L: int, d: int, h: int, causal: bool, window: int = 128, rank: int | None = None, chunk: int = 16
) -> float:
    rank = (1 if causal else 32) if rank is None else rank
    proj = 2 * L * d * 4 * d + 2 * L * d * h * rank  # q, k, v, out and W_P
    compress = 2 * 2 * L * rank * d  # P^T K, P^T V
    keys = (L / chunk * rank / 2 + window) if causal else (rank + 2 * window)
    return float(proj + compress + 2 * 2 * L * keys * d)


@register(
    "transformer_ls",
    family="low-rank + local attention",
    paper="Zhu et al. 2021, Long-Short Transformer: Efficient Transformers for Language and Vision",
    complexity="O(N (r + w))",
    causal=True,
    bidirectional=True,
    step=True,
    flops=transformer_ls_flops,
)
class LongShortAttention(Mixer):
    """Dynamic low-rank projection + segment-wise sliding window under one softmax, with DualLN."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        window: int = 128,
        rank: int | None = None,
        chunk_size: int = 16,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not isinstance(window, int) or window < 2 or window % 2:
            raise ValueError(f"transformer_ls: window must be an even int >= 2, got {window!r}")
        check_int("chunk_size", chunk_size, min=1, owner="transformer_ls")
        rank = (1 if causal else 32) if rank is None else rank
        if not isinstance(rank, int) or rank <= 0 or (causal and rank > chunk_size):
            raise ValueError(
                f"transformer_ls: rank must be a positive int (<= chunk_size={chunk_size} when causal), got {rank!r}"
            )
        self.window, self.rank, self.chunk = window, rank, chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, num_heads * rank, bias=bias)  # W_P (dconv_fc)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.ln_long = nn.LayerNorm(d_model)  # LN_L
        self.ln_short = nn.LayerNorm(d_model)  # LN_S
        self.rope = RotaryEmbedding(self.head_dim) if rope else None
        for w in (*self.qkv.weight.chunk(3), self.out.weight):
            nn.init.xavier_normal_(w)  # as in the official code

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window}, rank={self.rank}, chunk_size={self.chunk}"

    # ------------------------------------------------------------------ pieces
    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b l (h d) -> b h l d", h=self.num_heads)

    def _inputs(self, x: torch.Tensor, offset: int):
        """q (rotated for the window part and plain), raw k, v, normalised window k, v: ``[B, H, L, Dh]``;
        projection logits ``[B, H, L, r]``."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # [B, L, d]
        kw, vw = self._heads(self.ln_short(k)), self._heads(self.ln_short(v))
        q = self._heads(q)
        qw = q
        if self.rope is not None:
            qw, kw = self.rope(q, offset), self.rope(kw, offset)
        logits = rearrange(self.proj(x), "b l (h r) -> b h l r", h=self.num_heads)
        return q, qw, self._heads(k), self._heads(v), kw, vw, logits

    def _compress(self, k, v, logits, valid):
        """Per-head dynamic projection over the position axis (dim -2), then LN_L.

        ``k, v: [B, H, ..., n, Dh]``, ``logits: [B, H, ..., n, r]``, ``valid: bool`` broadcastable
        to ``[B, 1, ..., n]`` -> ``K_bar, V_bar: [B, H, ..., r, Dh]``.
        """
        p = logits.masked_fill(~valid[..., None], torch.finfo(logits.dtype).min).softmax(dim=-2)
        keep = valid[..., None].to(k.dtype)
        kb = p.transpose(-1, -2) @ (k * keep)  # [B, H, ..., r, Dh]
        vb = p.transpose(-1, -2) @ (v * keep)
        return self._norm_long(kb), self._norm_long(vb)

    def _norm_long(self, t: torch.Tensor) -> torch.Tensor:
        """LN_L over the concatenated heads of ``t: [B, H, ..., Dh]``."""
        t = self.ln_long(rearrange(t, "b h ... d -> b ... (h d)"))
        return rearrange(t, "b ... (h d) -> b h ... d", h=self.num_heads)

    @staticmethod
    def _attend_long(q, k, v, allowed, scale):
        """Softmax attention over the long-range keys with its log-sum-exp (for the exact merge)."""
        s = (q @ k.transpose(-1, -2)) * scale  # [B, H, L, M]
        if allowed is not None:
            s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
        lse = torch.logsumexp(s, dim=-1)  # [B, H, L]
        return torch.exp(s - lse[..., None]) @ v, lse

    # ------------------------------------------------------------------ forward
    def _forward(self, x, mask, state, return_state):
        if self.causal:
            return self._forward_causal(x, mask, state, return_state)
        B, L, _ = x.shape
        q, qw, k, v, kw, vw, logits = self._inputs(x, 0)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        kb, vb = self._compress(k, v, logits, valid[:, None])  # [B, H, r, Dh]
        scale = self.head_dim**-0.5
        o_long, lse_long = self._attend_long(q, kb, vb, None, scale)
        # Segment window: query half-block i (segment i // 2) sees half-blocks 2s-1 .. 2s+2.
        half = self.window // 2
        n = -(-L // half)
        seg = torch.arange(n, device=x.device) // 2
        table = 2 * seg[:, None] + torch.arange(-1, 3, device=x.device)  # [n, 4]
        table = table.masked_fill((table < 0) | (table >= n), -1)[None, None]
        o_win, lse_win = block_gather_attention(qw, kw, vw, table, half, key_mask=mask, return_lse=True)
        o, _ = merge_attention(o_long, lse_long, o_win, lse_win)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), None

    def _forward_causal(self, x, mask, state, return_state):
        B, L, _ = x.shape
        l, r, w = self.chunk, self.rank, self.window
        if state is None:
            state = self._init_state(B, x.device, x.dtype)
        pos = state["pos"]
        q, qw, k, v, kw, vw, logits = self._inputs(x, pos)

        # short-term keys: the last w tokens, with the cached w - 1 before this input
        n_w = state["win_k"].shape[2]
        kw_all = torch.cat([state["win_k"], kw], 2)  # [B, H, n_w + L, Dh]
        vw_all = torch.cat([state["win_v"], vw], 2)
        win_ok = None if mask is None else torch.cat([mask.new_ones(B, n_w), mask], 1)

        # long-range keys: compressed keys of every completed chunk (chunks aligned to absolute positions)
        n_c = state["cur_k"].shape[2]
        k_raw = torch.cat([state["cur_k"], k], 2)  # [B, H, n_c + L, Dh]
        v_raw = torch.cat([state["cur_v"], v], 2)
        lg_raw = torch.cat([state["cur_p"], logits], 2)  # [B, H, n_c + L, r]
        full = (n_c + L) // l  # completed chunks
        valid = torch.ones(B, full * l, dtype=torch.bool, device=x.device)
        if mask is not None:
            valid = torch.cat([mask.new_ones(B, n_c), mask], 1)[:, : full * l]
        chunked = lambda t: t[:, :, : full * l].unflatten(2, (full, l))  # noqa: E731  [B, H, G, l, *]
        valid_c = valid.view(B, 1, full, l)
        kb, vb = self._compress(chunked(k_raw), chunked(v_raw), chunked(lg_raw), valid_c)  # [B, H, G, r, Dh]
        k_long = torch.cat([state["mem_k"], kb.flatten(2, 3)], 2)  # [B, H, M, Dh]
        v_long = torch.cat([state["mem_v"], vb.flatten(2, 3)], 2)
        # query i (relative position n_c + i) sees compressed key j iff its chunk is earlier and has a
        # real token; the memory's chunks (index -1) are all earlier
        n_mem = state["mem_k"].shape[2]
        key_chunk = torch.cat(
            [torch.full((n_mem,), -1, device=x.device), torch.arange(full, device=x.device).repeat_interleave(r)]
        )  # [M]
        q_chunk = torch.arange(n_c, n_c + L, device=x.device) // l  # [L]
        long_ok = None
        if mask is not None:
            long_ok = torch.cat([mask.new_ones(B, n_mem), valid_c.any(-1)[:, 0].repeat_interleave(r, -1)], 1)
        block = w * max(1, QUERY_BLOCK // w)  # queries per super-block
        o = causal_long_short_attention(
            q, qw, k_long, v_long, kw_all, vw_all, q_chunk, key_chunk, long_ok, win_ok, n_w, w, block
        )  # [B, H, L, Dh]
        y = self.out(rearrange(o, "b h l d -> b l (h d)"))
        new_state = None
        if return_state:
            new_state = {
                "win_k": kw_all[:, :, -(w - 1) :] if w > 1 else kw_all[:, :, :0],
                "win_v": vw_all[:, :, -(w - 1) :] if w > 1 else vw_all[:, :, :0],
                "cur_k": k_raw[:, :, full * l :],
                "cur_v": v_raw[:, :, full * l :],
                "cur_p": lg_raw[:, :, full * l :],
                "mem_k": k_long,
                "mem_v": v_long,
                "pos": pos + L,
            }
        return y, new_state

    # ------------------------------------------------------------------ recurrence
    def _init_state(self, batch_size, device, dtype):
        z = lambda n: torch.zeros(batch_size, self.num_heads, 0, n, device=device, dtype=dtype)  # noqa: E731
        Dh = self.head_dim
        return {
            "win_k": z(Dh),
            "win_v": z(Dh),
            "cur_k": z(Dh),
            "cur_v": z(Dh),
            "cur_p": z(self.rank),
            "mem_k": z(Dh),
            "mem_v": z(Dh),
            "pos": 0,
        }

    def state_size(self, seq_len):
        win = 2 * min(seq_len, self.window - 1) * self.d_model
        cur = (seq_len % self.chunk) * (2 * self.d_model + self.num_heads * self.rank)
        mem = 2 * (seq_len // self.chunk) * self.rank * self.d_model
        return win + cur + mem
