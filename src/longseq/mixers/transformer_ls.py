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
both key sets go through one softmax in :class:`_CausalLongShort`, a flash-attention-style
kernel over query blocks with a recomputing backward: a block scores only the prefix of
compressed keys it may see and the window band around it, so memory is O(N d) (the dense
``N x N r / l`` scores of a plain implementation made the memory grow 2.7x per doubling of N).
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
from torch.autograd.function import once_differentiable

from ..ops import block_gather_attention, merge_attention
from ..nn.rotary import RotaryEmbedding
from ..utils.validate import check_int
from .base import Mixer, register


# Queries per super-block of the causal kernel (rounded down to a multiple of the window, at least
# one window): 1024 keeps each block's tensors a few MB at d_model 256 (cache-sized, few ops).
QUERY_BLOCK = 1024


class _CausalLongShort(torch.autograd.Function):
    """One softmax per query over its long-range keys ``K_bar`` (plain query ``q``) and its window
    of the last ``w`` keys (``q_w``, rotated when ``rope``), flash-attention style: queries are
    taken in super-blocks of ``block`` (a multiple of ``w``) tokens; a super-block scores the
    prefix of ``K_bar`` its queries may see (``[B, H, n, M]``, masked only on its own chunks'
    keys) and, per sub-block of ``w`` queries, the ``2 w`` window keys around it
    (``[B, H, n / w, w, 2 w]``). Nothing of size ``L x (number of keys)`` is kept: the backward
    recomputes the probabilities from the saved row maxima and sums. A query with no allowed
    key gets output 0.

    ``exp`` is evaluated at ``max(s - rowmax, -80)``: a probability below ``e^-80 = 1.8e-35``
    (relative to the row's largest) is raised to that, far below float32 resolution, because
    ``exp`` of more negative arguments (masked scores included, which are then zeroed) takes a
    4-30x slower path on CPU.

    Backward, with ``P`` the probabilities and ``D_i = sum_d dO_id O_id``:
    ``dS = P (dO V^T - D)``, ``dQ = dS K / sqrt(Dh)``, ``dK = dS^T Q / sqrt(Dh)``, ``dV = P^T dO``;
    the window keys' gradients are summed back from the overlapping spans.
    """

    @staticmethod
    def forward(ctx, q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, sizes):
        L, (n_w, w, block) = q.shape[2], sizes
        Lp = -(-L // w) * w
        scale = q.shape[-1] ** -0.5
        q, qw = _pad_rows(q * scale, Lp), _pad_rows(qw * scale, Lp)    # [B, H, Lp, Dh]
        kwp, vwp, okp = _pad_window(kw, vw, win_ok, n_w, L, w)          # [B, H, Np, Dh], [B|1, Np]
        o = q.new_empty(q.shape)
        rowmax, inv_sum = q.new_empty(q.shape[:-1] + (1,)), q.new_empty(q.shape[:-1] + (1,))
        for blk in _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
            s_l, s_w = blk.scores(q, qw, kl)
            m = s_w.amax(-1).flatten(-2, -1).unsqueeze(-1)                # [B, H, n, 1]
            if s_l is not None:
                m = torch.maximum(m, s_l.amax(-1, keepdim=True))
            m.clamp_min_(torch.finfo(m.dtype).min)                       # finite for empty rows
            p_l, p_w = blk.probs(s_l, s_w, m)
            total = p_w.sum(-1).flatten(-2, -1).unsqueeze(-1)
            if p_l is not None:
                total += p_l.sum(-1, keepdim=True)
            inv = torch.where(total > 0, 1 / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
            p_w.mul_(inv.unflatten(2, p_w.shape[2:4]))
            o_b = (p_w @ blk.v_span).flatten(2, 3)                        # [B, H, n, Dh]
            if p_l is not None:
                o_b += p_l.mul_(inv) @ vl[:, :, :blk.M]
            o[:, :, blk.i0:blk.i1], rowmax[:, :, blk.i0:blk.i1], inv_sum[:, :, blk.i0:blk.i1] = o_b, m, inv
        ctx.save_for_backward(q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, o, rowmax, inv_sum)
        ctx.sizes = sizes
        return o[:, :, :L]

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        q, qw, kl, vl, kw, vw, q_chunk, key_chunk, long_ok, win_ok, o, rowmax, inv_sum = ctx.saved_tensors
        (n_w, w, block), L, Lp = ctx.sizes, kw.shape[2] - ctx.sizes[0], q.shape[2]
        kwp, vwp, okp = _pad_window(kw, vw, win_ok, n_w, L, w)
        do = _pad_rows(do, Lp)
        D = (do * o).sum(-1, keepdim=True)                              # [B, H, Lp, 1]
        dq, dqw = torch.empty_like(q), torch.empty_like(qw)
        dkl, dvl, dkwp, dvwp = (torch.zeros_like(t) for t in (kl, vl, kwp, vwp))
        for blk in _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
            i0, i1, M = blk.i0, blk.i1, blk.M
            s_l, s_w = blk.scores(q, qw, kl)
            m, inv = rowmax[:, :, i0:i1], inv_sum[:, :, i0:i1]
            p_l, p_w = blk.probs(s_l, s_w, m)
            do_b, D_b = do[:, :, i0:i1], D[:, :, i0:i1]
            do_w = do_b.unflatten(2, p_w.shape[2:4])                      # [B, H, n / w, w, Dh]
            p_w.mul_(inv.unflatten(2, p_w.shape[2:4]))
            ds_w = (do_w @ blk.v_span.transpose(-1, -2)).sub_(D_b.unflatten(2, p_w.shape[2:4])).mul_(p_w)
            dqw[:, :, i0:i1] = (ds_w @ blk.k_span).flatten(2, 3)
            blk.add_span_grads(dkwp, ds_w.transpose(-1, -2) @ blk.qw_sub)
            blk.add_span_grads(dvwp, p_w.transpose(-1, -2) @ do_w)
            if p_l is None:
                dq[:, :, i0:i1] = 0
                continue
            p_l.mul_(inv)
            ds_l = (do_b @ vl[:, :, :M].transpose(-1, -2)).sub_(D_b).mul_(p_l)  # [B, H, n, M]
            dq[:, :, i0:i1] = ds_l @ kl[:, :, :M]
            dkl[:, :, :M] += ds_l.transpose(-1, -2) @ q[:, :, i0:i1]
            dvl[:, :, :M] += p_l.transpose(-1, -2) @ do_b
        scale = q.shape[-1] ** -0.5
        f = _front_pad(n_w, w)
        window = slice(f, f + n_w + L)
        return (dq[:, :, :L].mul_(scale), dqw[:, :, :L].mul_(scale), dkl, dvl, dkwp[:, :, window],
                dvwp[:, :, window], *([None] * 5))


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """Zero rows appended along dim 2 up to ``n``."""
    return t if t.shape[2] == n else torch.cat([t, t.new_zeros(*t.shape[:2], n - t.shape[2], t.shape[3])], 2)


def _front_pad(n_w: int, w: int) -> int:
    """Zero keys put before the window keys so that ``n_w`` (the cached ones) + pad is a multiple of w."""
    return w + (-n_w) % w


def _pad_window(kw, vw, win_ok, n_w, L, w):
    """Window keys/values ``[B, H, n_w + L, Dh]`` padded (zeros, not allowed) in front to align query
    sub-blocks to key blocks of ``w`` and behind to a whole block plus one; and their validity."""
    f, back = _front_pad(n_w, w), w + (-L) % w
    B = kw.shape[0]
    ok = win_ok if win_ok is not None else torch.ones(1, n_w + L, dtype=torch.bool, device=kw.device)
    okp = torch.cat([ok.new_zeros(ok.shape[0], f), ok, ok.new_zeros(ok.shape[0], back)], 1)
    pad = lambda t: torch.cat([t.new_zeros(B, t.shape[1], f, t.shape[3]), t,  # noqa: E731
                               t.new_zeros(B, t.shape[1], back, t.shape[3])], 2)
    return pad(kw), pad(vw), okp


class _SuperBlock:
    """Queries ``[i0, i1)`` (padded coordinates; a multiple of ``w`` long) of :class:`_CausalLongShort`:
    its long-range key prefix ``[0, M)`` (the memory, then the compressed keys of chunks before the
    chunk of its last query; the first ``M0`` seen by all its queries: none with padded chunks) and,
    per sub-block of ``w`` queries, the spans of ``2 w`` window keys that end with the sub-block."""

    def __init__(self, i0, i1, L, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp) -> None:
        self.i0, self.i1, self.w = i0, i1, w
        last = q_chunk[min(i1, L) - 1]                                   # chunk of the last real query
        self.M = int((key_chunk < last).sum())                           # keys sorted by chunk
        self.M0 = 0 if long_ok is not None else int((key_chunk < q_chunk[i0]).sum())
        self.allowed_long = None
        if self.M > self.M0:
            qc = q_chunk[i0:min(i1, L)]
            qc = torch.cat([qc, qc.new_full((i1 - i0 - qc.shape[0],), int(qc[-1]))])  # padded rows: as the last
            allowed = key_chunk[None, self.M0:self.M] < qc[:, None]                  # [n, M - M0]
            if long_ok is not None:
                allowed = allowed[None] & long_ok[:, None, self.M0:self.M]
            self.allowed_long = allowed.view(-1, 1, *allowed.shape[-2:])             # [B|1, 1, n, M - M0]
        n_sub = (i1 - i0) // w
        self.b0 = (n_w + i0 + _front_pad(n_w, w)) // w - 1                # first key block of the spans
        spans = lambda t: torch.cat([t[:, :, self.b0:self.b0 + n_sub], t[:, :, self.b0 + 1:self.b0 + n_sub + 1]],  # noqa: E731
                                    dim=3)
        blocks = lambda t: t.unflatten(2, (-1, w))                      # noqa: E731  [B, H, Np / w, w, Dh]
        self.k_span, self.v_span = spans(blocks(kwp)), spans(blocks(vwp))  # [B, H, n_sub, 2 w, Dh]
        ok = spans(okp.unflatten(1, (-1, w))[:, None, ..., None])[..., 0]  # [B|1, 1, n_sub, 2 w]
        c = torch.arange(2 * w, device=okp.device)
        rel = w + torch.arange(w, device=okp.device)[:, None] - c          # query - key position
        self.allowed_win = ((rel >= 0) & (rel < w)) & ok[..., None, :]     # [B|1, 1, n_sub, w, 2 w]

    def scores(self, q, qw, kl):
        """``(q K_bar^T [B, H, n, M] or None, q_w K_span^T [B, H, n / w, w, 2 w])``, -inf where not allowed."""
        self.qw_sub = qw[:, :, self.i0:self.i1].unflatten(2, (-1, self.w))
        s_w = (self.qw_sub @ self.k_span.transpose(-1, -2)).masked_fill_(~self.allowed_win, float("-inf"))
        if self.M == 0:
            return None, s_w
        s_l = q[:, :, self.i0:self.i1] @ kl[:, :, :self.M].transpose(-1, -2)
        if self.allowed_long is not None:
            s_l[..., self.M0:].masked_fill_(~self.allowed_long, float("-inf"))
        return s_l, s_w

    def probs(self, s_l, s_w, m):
        """Unnormalised probabilities ``exp(max(s - m, -80))``, 0 where not allowed (in place)."""
        p_w = s_w.sub_(m.unflatten(2, s_w.shape[2:4])).clamp_min_(-80.0).exp_().masked_fill_(~self.allowed_win, 0.0)
        if s_l is None:
            return None, p_w
        p_l = s_l.sub_(m).clamp_min_(-80.0).exp_()
        if self.allowed_long is not None:
            p_l[..., self.M0:].masked_fill_(~self.allowed_long, 0.0)
        return p_l, p_w

    def add_span_grads(self, g_padded, g_span):
        """Add ``g_span [B, H, n_sub, 2 w, Dh]`` (gradients of the spans' keys) to the padded keys'."""
        blocks = g_padded.unflatten(2, (-1, self.w))                    # a view
        n_sub = g_span.shape[2]
        blocks[:, :, self.b0:self.b0 + n_sub] += g_span[..., :self.w, :]
        blocks[:, :, self.b0 + 1:self.b0 + n_sub + 1] += g_span[..., self.w:, :]


def _super_blocks(L, Lp, block, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp):
    for i0 in range(0, Lp, block):
        yield _SuperBlock(i0, min(i0 + block, Lp), L, q_chunk, key_chunk, long_ok, n_w, w, kwp, vwp, okp)


def transformer_ls_flops(L: int, d: int, h: int, causal: bool, window: int = 128, rank: int | None = None,
                         chunk: int = 16) -> float:
    rank = (1 if causal else 32) if rank is None else rank
    proj = 2 * L * d * 4 * d + 2 * L * d * h * rank                # q, k, v, out and W_P
    compress = 2 * 2 * L * rank * d                                # P^T K, P^T V
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

    def __init__(self, d_model: int, *, num_heads: int = 1, causal: bool = False, window: int = 128,
                 rank: int | None = None, chunk_size: int = 16, rope: bool = False, bias: bool = False) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        if not isinstance(window, int) or window < 2 or window % 2:
            raise ValueError(f"transformer_ls: window must be an even int >= 2, got {window!r}")
        check_int("chunk_size", chunk_size, min=1, owner="transformer_ls")
        rank = (1 if causal else 32) if rank is None else rank
        if not isinstance(rank, int) or rank <= 0 or (causal and rank > chunk_size):
            raise ValueError(f"transformer_ls: rank must be a positive int (<= chunk_size={chunk_size} when causal), "
                             f"got {rank!r}")
        self.window, self.rank, self.chunk = window, rank, chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, num_heads * rank, bias=bias)    # W_P (dconv_fc)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.ln_long = nn.LayerNorm(d_model)                            # LN_L
        self.ln_short = nn.LayerNorm(d_model)                           # LN_S
        self.rope = RotaryEmbedding(self.head_dim) if rope else None
        for w in (*self.qkv.weight.chunk(3), self.out.weight):
            nn.init.xavier_normal_(w)                                   # as in the official code

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window}, rank={self.rank}, chunk_size={self.chunk}"

    # ------------------------------------------------------------------ pieces
    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "b l (h d) -> b h l d", h=self.num_heads)

    def _inputs(self, x: torch.Tensor, offset: int):
        """q (rotated for the window part and plain), raw k, v, normalised window k, v: ``[B, H, L, Dh]``;
        projection logits ``[B, H, L, r]``."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)                          # [B, L, d]
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
        kb = p.transpose(-1, -2) @ (k * keep)                          # [B, H, ..., r, Dh]
        vb = p.transpose(-1, -2) @ (v * keep)
        return self._norm_long(kb), self._norm_long(vb)

    def _norm_long(self, t: torch.Tensor) -> torch.Tensor:
        """LN_L over the concatenated heads of ``t: [B, H, ..., Dh]``."""
        t = self.ln_long(rearrange(t, "b h ... d -> b ... (h d)"))
        return rearrange(t, "b ... (h d) -> b h ... d", h=self.num_heads)

    @staticmethod
    def _attend_long(q, k, v, allowed, scale):
        """Softmax attention over the long-range keys with its log-sum-exp (for the exact merge)."""
        s = (q @ k.transpose(-1, -2)) * scale                           # [B, H, L, M]
        if allowed is not None:
            s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
        lse = torch.logsumexp(s, dim=-1)                                # [B, H, L]
        return torch.exp(s - lse[..., None]) @ v, lse

    # ------------------------------------------------------------------ forward
    def _forward(self, x, mask, state, return_state):
        if self.causal:
            return self._forward_causal(x, mask, state, return_state)
        B, L, _ = x.shape
        q, qw, k, v, kw, vw, logits = self._inputs(x, 0)
        valid = torch.ones(B, L, dtype=torch.bool, device=x.device) if mask is None else mask
        kb, vb = self._compress(k, v, logits, valid[:, None])           # [B, H, r, Dh]
        scale = self.head_dim ** -0.5
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
        H, l, r, w = self.num_heads, self.chunk, self.rank, self.window
        if state is None:
            state = self._init_state(B, x.device, x.dtype)
        pos = state["pos"]
        q, qw, k, v, kw, vw, logits = self._inputs(x, pos)

        # short-term keys: the last w tokens, with the cached w - 1 before this input
        n_w = state["win_k"].shape[2]
        kw_all = torch.cat([state["win_k"], kw], 2)                     # [B, H, n_w + L, Dh]
        vw_all = torch.cat([state["win_v"], vw], 2)
        win_ok = None if mask is None else torch.cat([mask.new_ones(B, n_w), mask], 1)

        # long-range keys: compressed keys of every completed chunk (chunks aligned to absolute positions)
        n_c = state["cur_k"].shape[2]
        k_raw = torch.cat([state["cur_k"], k], 2)                        # [B, H, n_c + L, Dh]
        v_raw = torch.cat([state["cur_v"], v], 2)
        lg_raw = torch.cat([state["cur_p"], logits], 2)                  # [B, H, n_c + L, r]
        full = (n_c + L) // l                                            # completed chunks
        valid = torch.ones(B, full * l, dtype=torch.bool, device=x.device)
        if mask is not None:
            valid = torch.cat([mask.new_ones(B, n_c), mask], 1)[:, : full * l]
        chunked = lambda t: t[:, :, : full * l].unflatten(2, (full, l))  # noqa: E731  [B, H, G, l, *]
        valid_c = valid.view(B, 1, full, l)
        kb, vb = self._compress(chunked(k_raw), chunked(v_raw), chunked(lg_raw), valid_c)  # [B, H, G, r, Dh]
        k_long = torch.cat([state["mem_k"], kb.flatten(2, 3)], 2)        # [B, H, M, Dh]
        v_long = torch.cat([state["mem_v"], vb.flatten(2, 3)], 2)
        # query i (relative position n_c + i) sees compressed key j iff its chunk is earlier and has a
        # real token; the memory's chunks (index -1) are all earlier
        n_mem = state["mem_k"].shape[2]
        key_chunk = torch.cat([torch.full((n_mem,), -1, device=x.device),
                               torch.arange(full, device=x.device).repeat_interleave(r)])    # [M]
        q_chunk = torch.arange(n_c, n_c + L, device=x.device) // l                          # [L]
        long_ok = None
        if mask is not None:
            long_ok = torch.cat([mask.new_ones(B, n_mem), valid_c.any(-1)[:, 0].repeat_interleave(r, -1)], 1)
        block = w * max(1, QUERY_BLOCK // w)                             # queries per super-block
        o = _CausalLongShort.apply(q, qw, k_long, v_long, kw_all, vw_all, q_chunk, key_chunk, long_ok, win_ok,
                                   (n_w, w, block))                      # [B, H, L, Dh]
        y = self.out(rearrange(o, "b h l d -> b l (h d)"))
        new_state = None
        if return_state:
            new_state = {
                "win_k": kw_all[:, :, -(w - 1):] if w > 1 else kw_all[:, :, :0],
                "win_v": vw_all[:, :, -(w - 1):] if w > 1 else vw_all[:, :, :0],
                "cur_k": k_raw[:, :, full * l:], "cur_v": v_raw[:, :, full * l:], "cur_p": lg_raw[:, :, full * l:],
                "mem_k": k_long, "mem_v": v_long, "pos": pos + L,
            }
        return y, new_state

    # ------------------------------------------------------------------ recurrence
    def _init_state(self, batch_size, device, dtype):
        z = lambda n: torch.zeros(batch_size, self.num_heads, 0, n, device=device, dtype=dtype)  # noqa: E731
        Dh = self.head_dim
        return {"win_k": z(Dh), "win_v": z(Dh), "cur_k": z(Dh), "cur_v": z(Dh), "cur_p": z(self.rank),
                "mem_k": z(Dh), "mem_v": z(Dh), "pos": 0}

    def state_size(self, seq_len):
        win = 2 * min(seq_len, self.window - 1) * self.d_model
        cur = (seq_len % self.chunk) * (2 * self.d_model + self.num_heads * self.rank)
        mem = 2 * (seq_len // self.chunk) * self.rank * self.d_model
        return win + cur + mem
