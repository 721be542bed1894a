"""Butterfly sparsity patterns (Pixelated Butterfly, Chen, Dao et al., ICLR 2022, sec. 3).

A butterfly factor of stride ``s`` on ``n`` indices (``n`` a power of 2) is non-zero at
``(j, j), (j, j + s), (j + s, j), (j + s, j + s)`` for ``j mod 2s < s``, i.e. exactly where
``i XOR j`` is ``0`` or ``s``. A *flat* butterfly with ``f`` factors is the union (the first-order
expansion of the product, Pixelfly eq. 3) of the factors of strides ``1, 2, ..., 2^(f-1)``:
``(i, j)`` is on iff ``i XOR j`` is 0 or a power of two below ``2^f``.

These generators are shared by the block-sparse attention mixer (``block_sparse``, where the
indices are blocks of tokens) and by block-sparse linear layers (:func:`flat_block_butterfly_layout`,
the ``FlatBlockButterflySparsityConfig`` construction of the official code).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "butterfly_factor_mask",
    "flat_butterfly_mask",
    "butterfly_neighbors",
    "flat_block_butterfly_layout",
]


def _check_factors(n: int, n_factors: int | None) -> int:
    """Number of factors to use on ``n`` indices (None = all ``ceil(log2 n)``)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"butterfly size n must be a positive int, got {n!r}")
    full = (n - 1).bit_length()  # ceil(log2 n)
    if n_factors is None:
        return full
    if not isinstance(n_factors, int) or isinstance(n_factors, bool) or n_factors < 1:
        raise ValueError(f"n_factors must be a positive int or None, got {n_factors!r}")
    return n_factors


def butterfly_factor_mask(n: int, stride: int, device=None) -> torch.Tensor:
    """bool ``[n, n]``: the support of one butterfly factor of ``stride`` (a power of 2)."""
    if not isinstance(stride, int) or stride < 1 or stride & (stride - 1):
        raise ValueError(f"butterfly stride must be a power of 2, got {stride!r}")
    i = torch.arange(n, device=device)
    x = i[:, None] ^ i[None, :]
    return (x == 0) | (x == stride)


def flat_butterfly_mask(n: int, n_factors: int | None = None, device=None) -> torch.Tensor:
    """bool ``[n, n]``: union of the butterfly factors of strides ``1 .. 2^(n_factors - 1)``.

    ``n`` need not be a power of 2: the pattern is the top-left ``n x n`` corner of the one on
    ``2^ceil(log2 n)`` indices. ``n_factors=None`` uses all ``ceil(log2 n)`` factors.
    """
    f = _check_factors(n, n_factors)
    mask = torch.eye(n, dtype=torch.bool, device=device)
    for s in range(f):
        mask |= butterfly_factor_mask(n, 2**s, device)
    return mask


def butterfly_neighbors(n: int, n_factors: int | None = None, device=None) -> torch.Tensor:
    """long ``[n, 1 + n_factors]``: row ``i`` lists ``i`` and ``i XOR 2^s`` for ``s < n_factors``
    (the non-zeros of row ``i`` of :func:`flat_butterfly_mask`); partners ``>= n`` are replaced by
    ``i`` itself, so that rows keep one width (callers dedupe)."""
    f = _check_factors(n, n_factors)
    i = torch.arange(n, device=device)[:, None]  # [n, 1]
    strides = 2 ** torch.arange(f, device=device)[None, :]  # [1, f]
    partners = i ^ strides  # [n, f]
    partners = torch.where(partners < n, partners, i)
    return torch.cat([i, partners], dim=1)


def flat_block_butterfly_layout(
    out_features: int,
    in_features: int,
    butterfly_size: int = 16,
    n_factors: int = 2,
    block: int = 32,
    global_size: int = 0,
) -> torch.Tensor:
    """bool ``[out_features / block, in_features / block]``: Pixelfly's flat block butterfly layout
    of a weight matrix (defaults of the official configs: 16 x 16 coarse pattern, 2 factors).

    The ``butterfly_size x butterfly_size`` flat butterfly is stretched so that each coarse cell
    covers an ``(out / butterfly_size) x (in / butterfly_size)`` tile, the first ``global_size``
    rows and columns are switched on, and a ``block x block`` block of the result is on iff any
    of its entries is.
    """
    if butterfly_size < 2 or butterfly_size & (butterfly_size - 1):
        raise ValueError(f"butterfly_size must be a power of 2 >= 2, got {butterfly_size!r}")
    log_n = int(math.log2(butterfly_size))
    if not isinstance(n_factors, int) or not 1 <= n_factors <= log_n:
        raise ValueError(f"n_factors must be an int in [1, log2(butterfly_size)={log_n}], got {n_factors!r}")
    for name, size in (("out_features", out_features), ("in_features", in_features)):
        if size % butterfly_size or size % block:
            raise ValueError(f"{name}={size} must be divisible by butterfly_size={butterfly_size} and block={block}")
    coarse = flat_butterfly_mask(butterfly_size, n_factors)
    fine = coarse.repeat_interleave(out_features // butterfly_size, 0)
    fine = fine.repeat_interleave(in_features // butterfly_size, 1)  # [out, in]
    if global_size > 0:
        fine[:global_size] = True
        fine[:, :global_size] = True
    tiles = fine.view(out_features // block, block, in_features // block, block)
    return tiles.any(dim=3).any(dim=1)
