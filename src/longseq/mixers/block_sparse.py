"""Block-sparse softmax attention: BigBird, the Hypercube Transformer and block butterfly attention.

All three cut the sequence into blocks of ``block_size`` tokens and let query block ``i`` attend,
with dense softmax attention (Vaswani et al. 2017, eq. 1) and ONE softmax over the union, to a
small list of key blocks; they differ only in that list (:meth:`_BlockSparseAttention.key_blocks`).
The list is gathered by :func:`longseq.ops.block_gather_attention` in O(N * keys per query) time
and memory. "Global" query blocks that attend to every key are computed separately as dense rows
(O(N * block) each). Lengths that are not multiples of ``block_size`` are padded internally; padded
keys (internal or from the user's ``mask``) never receive weight.

* ``bigbird`` — Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences", sec. 2 and
  App. D (BIGBIRD-ITC, block form of Fig. 4 / Alg. 1 of the official code):
  query block ``i`` attends to global blocks ``{0, n-1}``, window blocks ``{i-1, i, i+1}`` and
  ``r`` random blocks drawn from the others; blocks ``0`` and ``n-1`` attend to everything.
  Defaults: ``block_size=64``, ``num_random_blocks=3`` (released scripts).
* ``hypercube`` — Wang et al., ICML 2022, "What Dense Graph Do You Need for Self-Attention?"
  (Hypercube Transformer, sec. 5): block ``p`` (blocks of 16) carries the Gray-code label ``g(p)``
  and attends to itself and to the blocks whose labels differ from ``g(p)`` in one bit
  (``k = ceil(log2 n)`` neighbours): O(N log N), diameter ``k``.
* ``block_sparse`` — FlashAttention's block-sparse attention (Dao et al. 2022, sec. 3.3) with the
  flat block butterfly pattern of Pixelated Butterfly (Chen, Dao et al. 2022, sec. 3.2,
  :mod:`longseq.nn.butterfly`): query block ``i`` attends to ``i`` and ``i XOR 2^s``,
  ``s < n_factors``, plus optional ``local_blocks`` on each side and ``global_blocks`` first blocks.

Decisions on ambiguous points (see each class for more):
* Padding: BigBird's global blocks are the first and the *last real* block of each sequence (ITC
  global tokens are existing tokens), so a padded batch gives each sequence the pattern it has
  alone; the original code pads to a fixed length and its "last" block can be all padding.
* RoPE (``rope=True``) rotates queries and keys at their absolute positions before gathering.
* Block butterfly on attention: the paper applies the flat block butterfly to weight matrices with
  a fixed 16 x 16 coarse grid stretched to the matrix; stretched to an N x N score matrix that
  keeps a constant density (O(N^2)), so here the butterfly runs over the grid of token blocks
  itself (``n = ceil(N / block_size)`` indices, all ``ceil(log2 n)`` factors by default:
  O(N log N); a fixed ``n_factors`` gives O(N)).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..nn.butterfly import butterfly_neighbors
from ..nn.rotary import RotaryEmbedding
from ..ops.block_sparse.block import _attend, block_gather_attention
from ..utils.validate import check_int
from .base import Mixer, register


def _positive_int(name: str, value, minimum: int = 1) -> int:
    return check_int(name, value, min=minimum)


def _proj_flops(L: int, d: int) -> float:
    return 2 * L * d * 4 * d


class _BlockSparseAttention(Mixer):
    """Projections, RoPE and the gather/global-row machinery shared by the three mixers."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        block_size: int = 64,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        self.block_size = _positive_int(f"{self.spec.name}: block_size", block_size)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}, rope={self.rope is not None}"

    # -- the pattern ------------------------------------------------------------------
    def key_blocks(self, n: int, lengths: torch.Tensor) -> torch.Tensor:
        """Key blocks of each query block: long ``[B|1, H|1, n, m]`` (-1 = none, repeats allowed).
        ``n``: blocks of the padded batch; ``lengths: [B]`` real tokens of each sequence."""
        raise NotImplementedError

    def global_rows(self, n: int, lengths: torch.Tensor) -> torch.Tensor | None:
        """Query blocks that attend to every key: long ``[B, g]`` (or None)."""
        return None

    # -- forward --------------------------------------------------------------------
    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        lengths = _real_lengths(mask, B, L, x.device)  # [B]
        n = -(-L // self.block_size)
        tbl = self.key_blocks(n, lengths)  # [B|1, H|1, n, m]
        o = block_gather_attention(q, k, v, tbl, self.block_size, mask, self.causal)  # [B, H, L, Dh]
        rows = None if self.causal else self.global_rows(n, lengths)
        if rows is not None:
            o = self._dense_rows(q, k, v, mask, o, rows)
        return self.out(rearrange(o, "b h l d -> b l (h d)")), None

    def _dense_rows(self, q, k, v, mask, o, rows):
        """Replace the outputs of query blocks ``rows: [B, g]`` by full attention over all keys."""
        B, H, L, Dh = q.shape
        bs, n, g = self.block_size, -(-L // self.block_size), rows.shape[1]
        pad = n * bs - L
        qb = rearrange(nn.functional.pad(q, (0, 0, 0, pad)), "b h (n i) d -> b h n i d", i=bs)
        ob = rearrange(nn.functional.pad(o, (0, 0, 0, pad)), "b h (n i) d -> b h n i d", i=bs)
        idx = rows[:, None, :, None, None].expand(B, H, g, bs, Dh)
        qg = rearrange(qb.gather(2, idx), "b h g i d -> b h (g i) d")  # [B, H, g*bs, Dh]
        allowed = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, L]
        og, _ = _attend(qg, k, v, allowed, Dh**-0.5, False)
        og = rearrange(og, "b h (g i) d -> b h g i d", i=bs)  # [B, H, g, bs, Dh]
        blocks = torch.arange(n, device=q.device)
        for j in range(g):  # later rows win on repeats, so each query block is written once
            hit = (blocks[None, :] == rows[:, j : j + 1])[:, None, :, None, None]  # [B, 1, n, 1, 1]
            ob = torch.where(hit, og[:, :, j : j + 1], ob)
        return rearrange(ob, "b h n i d -> b h (n i) d")[:, :, :L]


def _real_lengths(mask, B, L, device) -> torch.Tensor:
    """Tokens up to and including the last real one, per sequence: long ``[B]``."""
    if mask is None:
        return torch.full((B,), L, dtype=torch.long, device=device)
    pos = torch.arange(1, L + 1, device=device)
    return (mask * pos).amax(dim=1).clamp(min=1)


# =================================================================================== BigBird
def bigbird_flops(L, d, h, causal, block_size=64, num_random_blocks=3):
    keys = min(L, (5 + num_random_blocks) * block_size)
    glob = 2 * min(L, 2 * block_size) * L * d * 2
    return float(_proj_flops(L, d) + 2 * 2 * L * keys * d + glob)


def bigbird_random_blocks(n: int, heads: int, r: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """BigBird's random blocks: long ``[heads, n, r]``; row ``i`` in ``1..n-2`` holds ``r`` distinct
    blocks drawn uniformly from ``{1..n-2} minus {i-1, i, i+1}`` (neither global nor window);
    rows 0 and n-1 (global) hold -1. Needs ``n >= 5 + r`` (Floyd's sampling, vectorised over rows)."""
    rows = torch.arange(n)
    lo, hi = (rows - 1).clamp(min=1), (rows + 1).clamp(max=n - 2)
    excluded = (hi - lo + 1).clamp(min=0)  # window blocks inside 1..n-2
    m = (n - 2 - excluded).clamp(min=0)  # candidates per row   [n]
    chosen = torch.full((heads, n, r), -1, dtype=torch.long)
    for t in range(r):  # Floyd: pick in [0, m-r+t], or m-r+t if taken
        top = (m - r + t).clamp(min=0)  # [n]
        u = torch.rand(heads, n, generator=generator)
        pick = (u * (top + 1)).long().clamp(max=top)
        taken = (chosen[:, :, :t] == pick[..., None]).any(-1)
        chosen[:, :, t] = torch.where(taken, top.expand_as(pick), pick)
    blocks = 1 + chosen + torch.where(1 + chosen >= lo[:, None], excluded[:, None], 0)  # skip the window
    blocks[:, [0, n - 1]] = -1
    return blocks


@register(
    "bigbird",
    family="sparse attention",
    paper="Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences (ITC, block-sparse)",
    complexity="O(N (5 + r) b)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=bigbird_flops,
)
class BigBirdAttention(_BlockSparseAttention):
    """BigBird-ITC block-sparse attention (bidirectional only, as in the paper's encoder).

    Query block ``i`` (of ``n``) attends to ``{0, i-1, i, i+1, n-1} + R_i`` (``(5 + r) * block_size``
    keys; 4 distinct window/global blocks in rows 1 and n-2); blocks 0 and n-1 attend to all keys.
    Random blocks are drawn per head and per layer (:func:`bigbird_random_blocks`) from a generator
    seeded by this layer's seed (drawn from the torch RNG at construction and saved in the state
    dict) and the number of blocks: a fixed pattern per length, as the original TF code (which
    samples when the graph is built). ``resample=True`` instead draws fresh blocks at every
    training forward (HF's training behaviour); eval always uses the fixed pattern (HF's eval
    collapses random blocks onto block 0 — not reproduced). A sequence of at most
    ``(5 + 2r) * block_size`` real tokens uses full attention, as the paper's code does.
    No causal mode: the paper gives none (decoders use full attention).
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        block_size: int = 64,
        num_random_blocks: int = 3,
        resample: bool = False,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, block_size=block_size, rope=rope, bias=bias)
        self.num_random_blocks = _positive_int("bigbird: num_random_blocks", num_random_blocks, 0)
        self.resample = bool(resample)
        self.seed = int(torch.randint(0, 2**31 - 1, ()))

    def get_extra_state(self):
        # a tensor, so that model.save (safetensors: tensors only) can store it
        return torch.tensor(self.seed, dtype=torch.int64)

    def set_extra_state(self, state):
        self.seed = int(state["seed"] if isinstance(state, dict) else state)  # dict: older checkpoints

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_random_blocks={self.num_random_blocks}"

    def dense_threshold(self) -> int:
        """Sequences of at most this many tokens use full attention."""
        return (5 + 2 * self.num_random_blocks) * self.block_size

    def random_blocks(self, n: int) -> torch.Tensor:
        """The random blocks ``[H, n, r]`` used for a sequence of ``n`` blocks (on CPU)."""
        gen = None
        if not (self.resample and self.training):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + n)
        return bigbird_random_blocks(n, self.num_heads, self.num_random_blocks, gen)

    def sequence_key_blocks(self, n_real: int, sparse: bool) -> torch.Tensor:
        """long ``[H, n_real, m]`` for one sequence of ``n_real`` blocks."""
        H = self.num_heads
        i = torch.arange(n_real)[:, None]
        if not sparse:
            return torch.arange(n_real).expand(H, n_real, n_real)
        fixed = torch.cat([torch.zeros_like(i), i - 1, i, i + 1, torch.full_like(i, n_real - 1)], 1)  # [n, 5]
        fixed = torch.where(fixed < n_real, fixed, -1)
        return torch.cat([fixed.expand(H, -1, -1), self.random_blocks(n_real)], dim=2)

    def key_blocks(self, n, lengths):
        B, H, bs = lengths.shape[0], self.num_heads, self.block_size
        per_seq = {}
        for length in lengths.tolist():
            if length not in per_seq:
                per_seq[length] = self.sequence_key_blocks(-(-length // bs), length > self.dense_threshold())
        m = max(t.shape[2] for t in per_seq.values())
        tbl = torch.full((B, H, n, m), -1, dtype=torch.long)
        tbl[:, :, :, 0] = torch.arange(n)  # padded query blocks: themselves (outputs are zeroed)
        for b, length in enumerate(lengths.tolist()):
            t = per_seq[length]
            tbl[b, :, : t.shape[1], : t.shape[2]] = t
        return tbl.to(lengths.device)

    def global_rows(self, n, lengths):
        last = (lengths + self.block_size - 1) // self.block_size - 1
        return torch.stack([torch.zeros_like(last), last], dim=1)  # [B, 2]


# ================================================================================= Hypercube
def gray_code(p: torch.Tensor) -> torch.Tensor:
    """Reflected binary Gray code of positions ``p``."""
    return p ^ (p >> 1)


def inverse_gray_code(g: torch.Tensor, bits: int) -> torch.Tensor:
    """Position whose Gray code is ``g`` (``g < 2^bits``)."""
    p, shift = g.clone(), 1
    while shift < max(bits, 1):
        p ^= p >> shift
        shift <<= 1
    return p


def hypercube_key_blocks(n: int, device=None) -> torch.Tensor:
    """long ``[n, 1 + k]``, ``k = ceil(log2 n)``: block ``p`` and the blocks whose Gray labels differ
    from ``g(p)`` in one bit; neighbours at positions ``>= n`` are replaced by ``p`` (official code)."""
    k = (n - 1).bit_length()
    p = torch.arange(n, device=device)[:, None]  # [n, 1]
    flips = 2 ** torch.arange(k, device=device)[None, :]  # [1, k]
    nb = inverse_gray_code(gray_code(p) ^ flips, k)  # [n, k]
    return torch.cat([p, torch.where(nb < n, nb, p)], dim=1)


def hypercube_flops(L, d, h, causal, block_size=16):
    n = max(1, -(-L // block_size))
    return float(_proj_flops(L, d) + 2 * 2 * L * min(L, block_size * (1 + (n - 1).bit_length())) * d)


@register(
    "hypercube",
    family="sparse attention",
    paper="Wang et al. 2022, What Dense Graph Do You Need for Self-Attention? (Hypercube Transformer, NIP)",
    complexity="O(N log N)",
    causal=False,
    bidirectional=True,
    step=False,
    flops=hypercube_flops,
)
class HypercubeAttention(_BlockSparseAttention):
    """Hypercube block-sparse attention: block ``p`` attends to its Gray-code hypercube neighbours.

    Same layout for every head and layer, no global tokens (official ``TesseractSparsityConfig``).
    The official code builds the labels with a bit-reversed reflected Gray code; neighbour sets only
    depend on "labels differ in one bit", which is invariant under permuting bits, so the standard
    Gray code ``p ^ (p >> 1)`` gives the identical graph (checked in the tests). The graph of a
    sequence of ``n`` real blocks is the subgraph on the first ``n`` blocks of any longer one, so
    padding does not change it. Bidirectional only, as in the paper (encoders).
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        block_size: int = 16,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, block_size=block_size, rope=rope, bias=bias)

    def key_blocks(self, n, lengths):
        return hypercube_key_blocks(n, lengths.device)[None, None]


# ============================================================================ block butterfly
def block_sparse_flops(L, d, h, causal, block_size=32):
    n = max(1, -(-L // block_size))
    keys = min(L, block_size * (1 + (n - 1).bit_length()))
    return float(_proj_flops(L, d) + 2 * 2 * L * keys * d * (0.5 if causal else 1.0))


@register(
    "block_sparse",
    family="sparse attention",
    paper="Dao et al. 2022, FlashAttention (block-sparse); Chen, Dao et al. 2022, Pixelated Butterfly",
    complexity="O(N log N)",
    causal=True,
    bidirectional=True,
    step=False,
    flops=block_sparse_flops,
)
class BlockButterflyAttention(_BlockSparseAttention):
    """Block-sparse attention with a flat block butterfly layout (+ optional local/global blocks).

    Query block ``i`` attends to ``i``, ``i XOR 2^s`` for ``s < n_factors`` (None = all
    ``ceil(log2 n)``), blocks ``i - local_blocks .. i + local_blocks`` and the first
    ``global_blocks`` blocks; in bidirectional mode the first ``global_blocks`` blocks also attend
    to every key. Causal mode intersects the layout with the block lower triangle and masks future
    tokens inside the diagonal block (the causal block-sparse FlashAttention convention); global
    rows then see only their past. Default ``block_size=32``: Pixelfly's block size (the coarsest
    granularity its layouts are stored at); it also ran faster than 64 at 16K tokens on CPU.
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        block_size: int = 32,
        n_factors: int | None = None,
        local_blocks: int = 0,
        global_blocks: int = 0,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal, block_size=block_size, rope=rope, bias=bias)
        if n_factors is not None:
            _positive_int("block_sparse: n_factors", n_factors)
        self.n_factors = n_factors
        self.local_blocks = _positive_int("block_sparse: local_blocks", local_blocks, 0)
        self.global_blocks = _positive_int("block_sparse: global_blocks", global_blocks, 0)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, n_factors={self.n_factors}, local_blocks={self.local_blocks}, "
            f"global_blocks={self.global_blocks}"
        )

    def key_blocks(self, n, lengths):
        dev = lengths.device
        i = torch.arange(n, device=dev)[:, None]
        parts = [butterfly_neighbors(n, self.n_factors, dev)]  # [n, 1 + f]
        if self.local_blocks:
            offs = torch.arange(-self.local_blocks, self.local_blocks + 1, device=dev)
            parts.append(i + offs)  # [n, 2w + 1]
        if self.global_blocks:
            parts.append(torch.arange(self.global_blocks, device=dev).expand(n, -1))  # [n, g]
        tbl = torch.cat(parts, dim=1)
        bad = (tbl >= n) | ((tbl > i) if self.causal else False)
        return tbl.masked_fill(bad, -1)[None, None]

    def global_rows(self, n, lengths):
        if not self.global_blocks:
            return None
        g = min(self.global_blocks, n)
        return torch.arange(g, device=lengths.device).expand(lengths.shape[0], g)
