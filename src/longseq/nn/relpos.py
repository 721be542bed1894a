"""Position schemes that enter the attention logits: DeBERTa's disentangled attention and DIET.

Both add a per-head term to the content logits ``q_i . k_j`` of an attention mixer instead of
adding a position vector to the token embedding. A model owns one :class:`RelativePositions`
(the parameters shared across layers) and every attention layer holds a per-layer
:class:`PositionLayer` made by :meth:`RelativePositions.layer`; the layer returns the additive
logit bias ``[B|1, H, Lq, Lk]`` and the scale of the content logits. Queries are the last ``Lq``
of ``Lk`` positions (a KV cache prefix of ``offset = Lk - Lq`` precedes them), so step decoding
sees the same positions as the full forward.

Schemes (``SCHEMES``)
---------------------
``deberta`` / ``deberta_v2`` — He et al., ICLR 2021, "DeBERTa: Decoding-enhanced BERT with
Disentangled Attention", eq. (2)-(4) and Algorithm 1::

    A_ij = Q_c,i . K_c,j  +  Q_c,i . K_r,δ(i,j)  +  K_c,j . Q_r,δ(j,i),     softmax(A / sqrt(3 d_h))

with ``Q_r = P W_q,r``, ``K_r = P W_k,r`` from ONE relative embedding table ``P [2k, d]`` shared by
all layers, and ``δ(i,j) = clamp(i - j + k, 0, 2k - 1)``. Decisions:

* p2c is indexed with ``δ(j,i)`` as in the paper's eq. (4) and Algorithm 1. The HF code indexes
  p2c with ``clamp(i - j + k)`` (``-r_pos`` followed by a transpose), i.e. it equals the paper's
  form with the p2c rows of ``P`` mirrored; both are learned tables, we follow the paper.
* The p2p term is omitted (paper sec. 3.1). Scale ``1/sqrt(3 d_h)`` on all three terms.
* ``k`` (``span``) defaults to the model's ``max_len`` (HF: ``max_relative_positions`` defaults
  to ``max_position_embeddings``), 512 without one. ``P`` has ``N(0, 0.02)`` init (BERT init).
* v1 (``deberta``): separate per-layer ``W_q,r`` (with bias) and ``W_k,r`` (no bias) as in the HF
  ``pos_q_proj``/``pos_proj``; no LayerNorm on ``P``.
* v2 (``deberta_v2``, HF ``deberta_v2``): log-bucketed offsets (``make_log_bucket_position``:
  ``|r| <= b/2`` kept, beyond ``sign(r) (b/2 + ceil(log(|r|/(b/2)) / log((max_position-1)/(b/2))
  (b/2 - 1)))``), ``buckets=256``, ``max_position=512``, table of ``2 * buckets`` rows with a
  LayerNorm, and ``share_att_key``: ``Q_r, K_r`` use the layer's own q/k projections.
* Cost: c2p is ``Q_c K_r^T`` of shape ``[B, H, Lq, R]`` then gathered at ``δ(i,j)``; p2c is
  ``K_c Q_r^T`` ``[B, H, Lk, R]`` gathered at ``δ(j,i)`` and transposed — ``R <= 2k`` is the
  range of table rows these lengths can reach (computed from the position bounds, never
  ``N x N x d``). The gathered maps are ``[B, H, Lq, Lk]``, the size of the score matrix.

``diet_abs`` / ``diet_rel`` — Chen et al., EMNLP 2021, "A Simple and Effective Positional
Encoding for Transformers" (DIET, arXiv 2104.08698), sec. 4 (the primary text could not be read
here; the equations are from the project's reference notes, written from memory of the paper and
not checked against its text, and from the abstract)::

    A_ij = (x_i W_Q)(x_j W_K)^T / sqrt(d_h) + P_ij + S_{s(i), s(j)}

* DIET-ABS: ``P^h_ij = (P_Q^h)_i . (P_K^h)_j`` with per-head factors ``P_Q^h, P_K^h`` of shape
  ``[max_len, r]`` (rank ``r = rank``, default 16, decoupled from ``d_h``). Decision: the factors
  are owned by the model and shared across layers (the paper computes the position attention
  once); init ``N(0, r^-1/2)`` so the initial term has std ``r^-1/2``. Needs ``max_len``.
* DIET-REL: ``P^h_ij = w^h[clip(i - j, -k, k)]``, one learned scalar per head per clipped offset
  (no T5 log buckets), per layer, zero init. ``k = span`` (default as for DeBERTa). In causal
  models only ``i - j >= 0`` is ever used.
* Segment term (``num_segments > 0``): per-layer, per-head ``S^h [n_seg, n_seg]``, zero init,
  indexed by the token types of query and key. Token types are given for one (stateless)
  forward with :func:`segments` (``with segments(model, segment_ids): model(ids)``); the
  ``retrieval`` task has no joint (concatenated-pair) variant, so nothing in longseq sets them.
* No extra scale on ``P`` and ``S``; content logits keep ``1/sqrt(d_h)``.
"""

from __future__ import annotations

import contextlib
import math

import torch
from einops import rearrange
from torch import nn

SCHEMES = ("deberta", "deberta_v2", "diet_abs", "diet_rel")
DEFAULT_SPAN = 512


def log_bucket(rel: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa-v2 log buckets of integer offsets ``rel``: exact for ``|rel| <= buckets // 2``,
    logarithmic beyond, reaching ``buckets - 1`` at ``|rel| = max_position - 1``."""
    mid = buckets // 2
    a = rel.abs().to(torch.float64).clamp_min(mid)  # the log branch is used only where |rel| > mid
    log_pos = mid + torch.ceil(torch.log(a / mid) / math.log((max_position - 1) / mid) * (mid - 1))
    return torch.where(rel.abs() <= mid, rel, (torch.sign(rel) * log_pos).to(rel.dtype))


def query_key_offsets(L_q: int, L_k: int, device) -> torch.Tensor:
    """``rel[i, j] = i - j`` for queries at positions ``L_k - L_q .. L_k - 1``: ``[Lq, Lk]`` int64."""
    q_pos = torch.arange(L_k - L_q, L_k, device=device)
    return q_pos[:, None] - torch.arange(L_k, device=device)[None, :]


class RelativePositions(nn.Module):
    """The model-level part of a logit position scheme (parameters shared by all layers).

    Options: ``span`` (k, DeBERTa v1 / DIET-REL clip distance), ``buckets`` and ``max_position``
    (DeBERTa v2), ``rank`` and ``max_len`` (DIET-ABS), ``num_segments`` (DIET segment term).
    """

    def __init__(
        self,
        scheme: str,
        d_model: int,
        num_heads: int,
        *,
        max_len: int | None = None,
        span: int | None = None,
        buckets: int = 256,
        max_position: int = 512,
        rank: int = 16,
        num_segments: int = 0,
    ):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"unknown position scheme {scheme!r}; choose one of: {', '.join(SCHEMES)}")
        span = span if span is not None else (max_len or DEFAULT_SPAN)
        for name, v in (("span", span), ("buckets", buckets), ("rank", rank)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        if scheme == "deberta_v2" and (buckets < 4 or max_position <= buckets // 2 + 1):
            raise ValueError(
                f"deberta_v2 needs buckets >= 4 and max_position > buckets // 2 + 1, "
                f"got buckets={buckets}, max_position={max_position}"
            )
        if scheme.startswith("diet") and num_segments < 0:
            raise ValueError(f"num_segments must be >= 0, got {num_segments}")
        if scheme == "diet_abs" and not max_len:
            raise ValueError("position 'diet_abs' needs max_len (its absolute tables cover max_len positions)")
        self.scheme, self.num_heads, self.head_dim = scheme, num_heads, d_model // num_heads
        self.span, self.buckets, self.max_position = int(span), int(buckets), int(max_position)
        self.num_segments = int(num_segments) if scheme.startswith("diet") else 0
        self.max_len = max_len
        if scheme.startswith("deberta"):
            self.half = self.buckets if scheme == "deberta_v2" else self.span  # att_span: P has 2 * half rows
            self.table = nn.Parameter(torch.randn(2 * self.half, d_model) * 0.02)  # [2k, d]
            self.norm = nn.LayerNorm(d_model) if scheme == "deberta_v2" else None
        elif scheme == "diet_abs":
            self.p_q = nn.Parameter(torch.randn(num_heads, max_len, rank) * rank**-0.5)  # [H, N_max, r]
            self.p_k = nn.Parameter(torch.randn(num_heads, max_len, rank) * rank**-0.5)  # [H, N_max, r]

    def extra_repr(self) -> str:
        return f"scheme={self.scheme}, span={self.span}"

    def content_scale(self) -> float:
        return (3 * self.head_dim) ** -0.5 if self.scheme.startswith("deberta") else self.head_dim**-0.5

    def table_index(self, rel: torch.Tensor) -> torch.Tensor:
        """DeBERTa row of offset ``rel``: ``clamp(bucket(rel) + k, 0, 2k - 1)``."""
        if self.scheme == "deberta_v2":
            rel = log_bucket(rel, self.buckets, self.max_position)
        return (rel + self.half).clamp(0, 2 * self.half - 1)

    def layer(self, owned: bool = False) -> "PositionLayer":
        """A new per-layer module using this shared one (``owned``: register it as a submodule)."""
        return PositionLayer(self, owned)


class PositionLayer(nn.Module):
    """Per-layer part: ``(q, k, qkv) -> (bias [B|1, H, Lq, Lk] or None, content scale)``."""

    def __init__(self, shared: RelativePositions, owned: bool = False):
        super().__init__()
        if owned:
            self.shared = shared
        else:
            self._shared = (shared,)  # owned (and moved, saved) by the model; not a submodule here
        d, H, s = shared.num_heads * shared.head_dim, shared.num_heads, shared.scheme
        if s == "deberta":
            self.pos_q = nn.Linear(d, d, bias=True)  # W_q,r
            self.pos_k = nn.Linear(d, d, bias=False)  # W_k,r
        elif s == "diet_rel":
            self.rel = nn.Parameter(torch.zeros(H, 2 * shared.span + 1))  # [H, 2k + 1]
        if shared.num_segments:
            self.seg = nn.Parameter(torch.zeros(H, shared.num_segments, shared.num_segments))
        self.segment_ids: torch.Tensor | None = None  # set by `segments(...)` for one forward

    @property
    def src(self) -> RelativePositions:
        return self.shared if "shared" in self._modules else self._shared[0]

    def forward(self, q: torch.Tensor, k: torch.Tensor, qkv: nn.Linear | None = None):
        """``q: [B, H, Lq, Dh]``, ``k: [B, H, Lk, Dh]`` (content, all keys so far); ``qkv``: the
        layer's fused q/k/v projection (DeBERTa v2 shares it with the positions)."""
        src = self.src
        L_q, L_k = q.shape[2], k.shape[2]
        if src.scheme.startswith("deberta"):
            bias = self._deberta(src, q, k, qkv)
        elif src.scheme == "diet_abs":
            bias = self._diet_abs(src, L_q, L_k, q.dtype)
        else:
            idx = query_key_offsets(L_q, L_k, q.device).clamp(-src.span, src.span) + src.span
            bias = self.rel.to(q.dtype)[:, idx][None]  # [1, H, Lq, Lk]
        if self.segment_ids is not None:
            bias = bias + self._segment_bias(L_q, L_k, q.dtype)
        return bias, src.content_scale()

    def _deberta(self, src, q, k, qkv):
        B, H, L_q, _ = q.shape
        L_k = k.shape[2]
        rel = query_key_offsets(L_q, L_k, q.device)  # [Lq, Lk], i - j
        # Rows reachable by these offsets: δ is monotone in the offset, so bound it by the ends.
        ends = src.table_index(torch.tensor([1 - L_q, L_k - 1, 1 - L_k, L_q - 1]))  # c2p and p2c extremes
        lo, hi = int(ends.min()), int(ends.max())
        P = src.table[lo : hi + 1]  # [R, d]
        if src.norm is not None:
            P = src.norm(P)
        if src.scheme == "deberta_v2":
            q_r, k_r, _ = qkv(P).chunk(3, dim=-1)  # share_att_key
        else:
            q_r, k_r = self.pos_q(P), self.pos_k(P)
        q_r = rearrange(q_r.to(q.dtype), "r (h d) -> h r d", h=H)  # [H, R, Dh]
        k_r = rearrange(k_r.to(q.dtype), "r (h d) -> h r d", h=H)
        c2p = torch.einsum("bhid,hrd->bhir", q, k_r)  # [B, H, Lq, R]
        c2p = c2p.gather(-1, (src.table_index(rel) - lo).expand(B, H, L_q, L_k))
        p2c = torch.einsum("bhjd,hrd->bhjr", k, q_r)  # [B, H, Lk, R]
        p2c = p2c.gather(-1, (src.table_index(-rel.T) - lo).expand(B, H, L_k, L_q))  # [j, i] -> δ(j, i)
        return (c2p + p2c.transpose(-1, -2)) * src.content_scale()

    def _diet_abs(self, src, L_q, L_k, dtype):
        if L_k > src.max_len:
            raise ValueError(f"sequence length {L_k} exceeds diet_abs max_len={src.max_len}")
        p_q = src.p_q[:, L_k - L_q : L_k].to(dtype)  # [H, Lq, r]
        p_k = src.p_k[:, :L_k].to(dtype)  # [H, Lk, r]
        return torch.einsum("hir,hjr->hij", p_q, p_k)[None]  # [1, H, Lq, Lk]

    def _segment_bias(self, L_q, L_k, dtype):
        s = self.segment_ids  # [B, L]
        if L_q != L_k or s.shape[1] != L_k:
            raise ValueError(
                f"segment_ids of length {s.shape[1]} apply to one stateless forward of that "
                f"length (got {L_q} queries, {L_k} keys)"
            )
        n = self.src.num_segments
        flat = s[:, :, None] * n + s[:, None, :]  # [B, L, L] pair index
        return self.seg.to(dtype).flatten(1)[:, flat].transpose(0, 1)  # [B, H, L, L]


def make_position_layer(relpos, d_model: int, num_heads: int) -> PositionLayer | None:
    """A mixer's ``relpos`` option -> its per-layer module. ``relpos``: None, a scheme name or a
    dict ``{"scheme": ..., **RelativePositions options}`` (the mixer owns the tables: standalone
    use), or a model's shared :class:`RelativePositions` (the model owns them)."""
    if relpos is None:
        return None
    if isinstance(relpos, RelativePositions):
        if relpos.num_heads * relpos.head_dim != d_model or relpos.num_heads != num_heads:
            raise ValueError(
                f"relpos tables are for d_model={relpos.num_heads * relpos.head_dim}, "
                f"num_heads={relpos.num_heads}; the mixer has {d_model}, {num_heads}"
            )
        return relpos.layer(owned=False)
    if isinstance(relpos, str):
        relpos = {"scheme": relpos}
    if not isinstance(relpos, dict) or "scheme" not in relpos:
        raise ValueError(
            f"relpos must be None, one of {SCHEMES}, a dict with a 'scheme' key or a RelativePositions, got {relpos!r}"
        )
    opts = {k: v for k, v in relpos.items() if k != "scheme"}
    if relpos["scheme"] == "diet_abs":
        opts.setdefault("max_len", DEFAULT_SPAN)
    return RelativePositions(relpos["scheme"], d_model, num_heads, **opts).layer(owned=True)


@contextlib.contextmanager
def segments(model: nn.Module, segment_ids: torch.Tensor | None):
    """Token types ``[B, L]`` (int64 in ``[0, num_segments)``) for the DIET segment term of every
    layer of ``model`` during one forward: ``with segments(model, seg): out = model(ids)``."""
    layers = [m for m in model.modules() if isinstance(m, PositionLayer)]
    if segment_ids is not None:
        bad = [m for m in layers if not m.src.num_segments]
        if not layers or bad:
            raise ValueError("segment_ids need a DIET position scheme with num_segments > 0 in every layer")
        n = layers[0].src.num_segments
        if segment_ids.numel() and (int(segment_ids.min()) < 0 or int(segment_ids.max()) >= n):
            raise ValueError(f"segment_ids must lie in [0, {n})")
    for m in layers:
        m.segment_ids = segment_ids
    try:
        yield
    finally:
        for m in layers:
            m.segment_ids = None
