"""Pixelated Butterfly linear layer (Chen, Dao et al., ICLR 2022, "Pixelated Butterfly: Simple and
Efficient Sparse Training for Neural Network Models", sec. 3-4; official code HazyResearch/fly:
``blocksparse_linear.py::FlatBlockButterflySparsityConfig``, ``fastlinear.py::SparseLRLinear``,
configs ``channel_mlp_cfg/fbbflylr.yaml``).

    y = (1 - g(x)) * (M ⊙ W_s) x  +  g(x) * U V x  +  bias

* ``M``: the flat block butterfly mask (Pixelfly eq. 3, the first-order expansion of a product of
  butterfly factors; strides ``1 .. 2^(n_factors-1)`` on a ``butterfly_size`` coarse grid, each
  coarse cell stretched over an ``(out/butterfly_size) x (in/butterfly_size)`` tile, then made
  block-sparse with ``block x block`` blocks) -- built by
  :func:`longseq.nn.butterfly.flat_block_butterfly_layout`, the same generator the
  ``block_sparse`` attention mixer uses. Fixed before training.
* ``W_s`` is stored as its non-zero blocks only, ``[nnz, block, block]``. The product groups the
  block rows that read the same block columns (the rows of one stretched coarse butterfly row),
  gathers each group's ``block``-wide input slices once and multiplies them by the group's blocks
  in one batched matmul over groups (rows with fewer blocks are padded with a zero block): FLOPs
  ``2 N nnz block^2``, no dense ``d_out x d_in`` weight is formed.
* ``U V``: low-rank term of rank ``rank`` (``U [out, r]``, ``V [r, in]``).

Defaults follow the official GPT-2/ViT configs: ``butterfly_size=16``, ``n_factors=2`` (3 coarse
non-zeros per row, 18.75% density before blocking), ``block=32``, ``rank=32``. Small layers need a
smaller ``block`` (and ``rank``): ``d_in`` and ``d_out`` must be divisible by ``butterfly_size``
and by ``block``; at ``d=64`` with ``block=32`` the blocked mask is dense.

Decisions on ambiguous points:

* Mixing of the two terms: the paper writes ``gamma B + (1 - gamma) U V^T`` with a learned scalar;
  the official ``SparseLRLinear`` (default ``gating=True``) uses a per-token gate
  ``g = sigmoid(w_g . x + b_g)`` (a ``Linear(d_in, 1)``) and ``lerp(sparse, low_rank, g)``. We follow
  the code: ``gate="token"`` (default); ``gate="none"`` averages the two terms with ``g = 1/2``
  (the code's ``gating=False``).
* Initialisation: the sparse blocks are uniform on ``+-1/sqrt(fan_in)`` where ``fan_in`` is the
  number of inputs each output row actually reads (so a sparse row has the output variance of a
  dense ``nn.Linear`` row); ``V`` uniform on ``+-1/sqrt(d_in)`` and ``U`` on ``+-1/sqrt(rank)``
  (``nn.Linear`` defaults of the two factors); gate and bias ``nn.Linear`` defaults.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .butterfly import flat_block_butterfly_layout

__all__ = ["ButterflyLinear"]

GATES = ("token", "none")


class ButterflyLinear(nn.Module):
    """Flat block butterfly sparse + low-rank linear layer ``[..., d_in] -> [..., d_out]``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        block: int = 32,
        butterfly_size: int = 16,
        n_factors: int = 2,
        rank: int = 32,
        gate: str = "token",
    ):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"butterfly gate must be one of {GATES}, got {gate!r}")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
            raise ValueError(f"butterfly rank must be a non-negative int, got {rank!r}")
        if not isinstance(block, int) or isinstance(block, bool) or block < 1:
            raise ValueError(f"butterfly block must be a positive int, got {block!r}")
        self.in_features, self.out_features, self.block, self.rank = in_features, out_features, block, rank
        layout = flat_block_butterfly_layout(out_features, in_features, butterfly_size, n_factors, block)
        rows, cols = layout.nonzero(as_tuple=True)  # block coordinates, row-major
        self.register_buffer("rows", rows, persistent=False)  # [nnz]
        self.register_buffer("cols", cols, persistent=False)  # [nnz]
        self.register_buffer("layout", layout, persistent=False)  # [out/block, in/block]
        self._build_tables(layout, rows, cols)
        self.blocks = nn.Parameter(torch.empty(len(rows), block, block))  # [nnz, out_blk, in_blk]
        self.lr_v = nn.Parameter(torch.empty(rank, in_features)) if rank else None
        self.lr_u = nn.Parameter(torch.empty(out_features, rank)) if rank else None
        self.gate = nn.Linear(in_features, 1) if gate == "token" and rank else None
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.layout.sum(1)[self.rows].double() * self.block  # [nnz]: inputs read by the block's row
        bound = (1.0 / fan_in.sqrt()).to(self.blocks.dtype)[:, None, None]
        with torch.no_grad():
            self.blocks.uniform_(-1, 1).mul_(bound)
        if self.rank:
            nn.init.uniform_(self.lr_v, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))
            nn.init.uniform_(self.lr_u, -1 / math.sqrt(self.rank), 1 / math.sqrt(self.rank))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))

    def _build_tables(self, layout: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """Group block rows that read the same block columns (a stretched coarse butterfly row spans
        ``out / (butterfly_size * block)`` identical block rows) so that one gathered input slab
        serves the whole group. Groups of unequal size fall back to one block row per group; rows
        with fewer blocks than the widest are padded with a zero block (index ``nnz``)."""
        R, nnz = layout.shape[0], len(rows)
        patterns, group_id = torch.unique(layout, dim=0, return_inverse=True)  # [G, C], [R]
        sizes = torch.bincount(group_id)
        if sizes.min() != sizes.max():
            patterns, group_id, sizes = layout, torch.arange(R), torch.ones(R, dtype=torch.long)
        G, g = len(patterns), int(sizes[0])
        order = torch.argsort(group_id, stable=True)  # block rows by group
        group_rows = order.view(G, g)  # [G, g]
        k = int(patterns.sum(1).max())
        col_of = torch.zeros(G, k, dtype=torch.long)
        for q in range(G):
            c = patterns[q].nonzero().squeeze(1)
            col_of[q, : len(c)] = c
        index = torch.full_like(layout, nnz, dtype=torch.long)  # [R, C] -> stored block
        index[rows, cols] = torch.arange(nnz)
        block_of = torch.gather(index[group_rows.reshape(-1)], 1, col_of.repeat_interleave(g, 0)).view(
            G, g, k
        )  # [G, g, k]
        block_of = torch.where(torch.arange(k)[None, None] < patterns.sum(1)[:, None, None], block_of, nnz)
        self.register_buffer("col_of", col_of, persistent=False)  # [G, k]
        self.register_buffer("block_of", block_of, persistent=False)  # [G, g, k]
        inverse = torch.argsort(order)
        self.register_buffer("out_order", None if torch.equal(order, torch.arange(R)) else inverse, persistent=False)

    def sparse(self, x: torch.Tensor) -> torch.Tensor:
        """``(M ⊙ W_s) x`` by block gathering: ``x [N, d_in] -> [N, d_out]``. Each group of block rows
        gathers the ``k`` input slices its blocks read once and multiplies them by its blocks: one
        batched matmul over groups, contraction ``k * block``, output ``g * block`` wide."""
        N, b = x.shape[0], self.block
        G, g, k = self.block_of.shape
        xg = x.reshape(N, -1, b).transpose(0, 1)[self.col_of]  # [G, k, N, b]  gathered input slices
        xg = xg.permute(0, 2, 1, 3).reshape(G, N, k * b)  # [G, N, k*i]
        w = torch.cat([self.blocks, self.blocks.new_zeros(1, b, b)])  # [nnz + 1, o, i] (last: padding)
        w = w[self.block_of].permute(0, 2, 4, 1, 3).reshape(G, k * b, g * b)  # [G, k*i, g*o]
        y = torch.bmm(xg, w.to(x.dtype))  # [G, N, g*o]
        y = y.transpose(0, 1).reshape(N, G * g, b)  # [N, R (grouped order), b]
        if self.out_order is not None:
            y = y[:, self.out_order]  # back to block-row order
        return y.reshape(N, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features)  # [N, d_in]
        y = self.sparse(x)
        if self.rank:
            low = (x @ self.lr_v.to(x.dtype).t()) @ self.lr_u.to(x.dtype).t()  # [N, d_out]
            g = torch.sigmoid(self.gate(x)) if self.gate is not None else 0.5  # [N, 1]
            y = torch.lerp(y, low, g)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*lead, self.out_features)

    def dense_weight(self) -> torch.Tensor:
        """The masked sparse weight ``M ⊙ W_s`` as a dense ``[d_out, d_in]`` matrix (for tests and
        inspection; never used in the forward)."""
        b = self.block
        w = self.blocks.new_zeros(self.out_features // b, self.in_features // b, b, b)
        w[self.rows, self.cols] = self.blocks
        return w.permute(0, 2, 1, 3).reshape(self.out_features, self.in_features)

    @property
    def density(self) -> float:
        """Fraction of the ``d_out x d_in`` weight covered by non-zero blocks."""
        return float(self.layout.float().mean())

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops(self, n_tokens: int) -> float:
        """Forward FLOPs for ``n_tokens`` inputs: block-sparse ``2 nnz b^2`` + low rank
        ``2 r (d_in + d_out)`` + gate ``2 d_in`` and the lerp (3 d_out) + bias, per token."""
        per_token = 2 * self.blocks.numel()
        if self.rank:
            per_token += 2 * self.rank * (self.in_features + self.out_features) + 3 * self.out_features
            if self.gate is not None:
                per_token += 2 * self.in_features
        if self.bias is not None:
            per_token += self.out_features
        return float(n_tokens * per_token)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}, "
            f"nnz_blocks={self.blocks.shape[0]}, density={self.density:.3f}, rank={self.rank}, "
            f"gate={self.gate is not None}, bias={self.bias is not None}"
        )
