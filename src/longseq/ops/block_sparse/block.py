"""Block-local and block-sparse softmax attention in plain PyTorch (O(N * keys per query) memory).

Two kernels share one core (:func:`_attend`): queries are cut into blocks, each query block gets
its own small set of keys, and one softmax runs over that set. No N x N matrix is ever built.

* :func:`local_attention` — sliding window: query ``i`` sees keys ``j`` with ``0 <= i - j < window``
  (causal) or ``|i - j| < window`` (bidirectional). The keys of a query block are the neighbouring
  key blocks, taken as shifted views (no gather).
* :func:`block_gather_attention` — arbitrary block sparsity: a table ``key_blocks[..., i, :]`` lists
  the key blocks that query block ``i`` attends to; the K/V blocks are gathered and one softmax
  runs over their union (repeated entries count once). BigBird, Hypercube and block butterfly
  attention differ only in the table they pass.

Both take ``q, k, v: [B, H, L, Dh]`` and an optional ``key_mask: bool [B, L]`` (True = real
token; padded keys never receive weight), pad ``L`` internally to a multiple of the block size,
and can return the per-query log-sum-exp of the scores so that a caller can merge the result
exactly with another attention branch over disjoint keys (:func:`merge_attention`).
Rows with no allowed key (only possible at padded queries) get uniform weights, never NaN.
"""

from __future__ import annotations

import torch
from einops import rearrange

__all__ = ["local_attention", "block_gather_attention", "merge_attention", "dedupe_blocks"]


def _pad_len(x: torch.Tensor, multiple: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` up to a multiple of ``multiple``."""
    pad = -x.shape[dim] % multiple
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _key_valid(key_mask: torch.Tensor | None, B: int, L: int, Lp: int, device) -> torch.Tensor:
    """bool ``[B|1, Lp]``: real (non-padded) keys, False on the internal padding ``L..Lp``."""
    valid = torch.arange(Lp, device=device)[None, :] < L  # [1, Lp]
    if key_mask is not None:
        valid = valid & _pad_len(key_mask, Lp, 1)  # [B, Lp]
    return valid


def _attend(q, k, v, allowed, scale, return_lse):
    """Core: ``q: [..., Lq, Dh]``, ``k/v: [..., Lk, Dh]``, ``allowed`` bool broadcastable to
    ``[..., Lq, Lk]`` -> ``(o: [..., Lq, Dh], lse: [..., Lq] | None)``."""
    s = torch.matmul(q * scale, k.transpose(-1, -2))  # [..., Lq, Lk]
    if allowed is not None:
        s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
    o = torch.matmul(torch.softmax(s, dim=-1), v)
    return o, (torch.logsumexp(s, dim=-1) if return_lse else None)


def _finish(o, lse, L, return_lse):
    """Undo the blocking: ``o: [B, H, n, blk, Dh] -> [B, H, L, Dh]`` (and ``lse`` likewise)."""
    o = rearrange(o, "b h n i d -> b h (n i) d")[:, :, :L]
    if not return_lse:
        return o
    return o, rearrange(lse, "b h n i -> b h (n i)")[:, :, :L]


# --------------------------------------------------------------------------- local window
def _spans(x: torch.Tensor, blk: int, before: int, after: int, fill) -> torch.Tensor:
    """``x: [..., Lp, D] -> [..., Lp / blk, (before + 1 + after) * blk, D]``: row ``c`` holds positions
    ``(c - before) * blk`` to ``(c + after + 1) * blk - 1`` of ``x`` (``fill`` outside ``[0, Lp)``)."""
    Lp, D = x.shape[-2:]
    xp = torch.cat(
        [x.new_full((*x.shape[:-2], before * blk, D), fill), x, x.new_full((*x.shape[:-2], after * blk, D), fill)],
        dim=-2,
    )
    shifted = [
        xp[..., s * blk : s * blk + Lp, :].unflatten(-2, (Lp // blk, blk))  # [..., n, blk, D]
        for s in range(before + 1 + after)
    ]
    return torch.cat(shifted, dim=-2)


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    causal: bool = False,
    key_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    block_size: int | None = None,
    return_lse: bool = False,
):
    """Sliding-window attention, ``O(L * window)`` time and memory.

    ``q, k, v: [B, H, L, Dh]``. Query ``i`` attends to key ``j`` iff ``0 <= i - j < window``
    (causal: the last ``window`` tokens including itself) or ``|i - j| < window`` (bidirectional:
    ``2 * window - 1`` tokens), and ``key_mask[b, j]`` (when given). Queries are processed in
    blocks of ``block_size`` (default ``window``); a block sees the ``ceil((window - 1) / block)``
    key blocks before it (and after it, bidirectional) as shifted views of K and V.
    Returns ``o: [B, H, L, Dh]`` (and ``lse: [B, H, L]`` with ``return_lse``).
    """
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    B, H, L, Dh = q.shape
    blk = min(block_size or window, L)
    n = -(-L // blk)
    look = min(-(-(window - 1) // blk), n - 1)  # key blocks needed on each side
    scale = Dh**-0.5 if scale is None else scale
    Lp = n * blk
    q, k, v = (_pad_len(t, blk, 2) for t in (q, k, v))
    qb = rearrange(q, "b h (n i) d -> b h n i d", i=blk)  # [B, H, n, blk, Dh]
    valid = _key_valid(key_mask, B, L, Lp, q.device)  # [B|1, Lp]

    before, after = look, (0 if causal else look)
    kb = _spans(k, blk, before, after, 0.0)  # [B, H, n, S*blk, Dh]
    vb = _spans(v, blk, before, after, 0.0)  # [B, H, n, S*blk, Dh]
    kvalid = _spans(valid[..., None], blk, before, after, False)[..., 0]  # [B|1, n, S*blk]
    pos = torch.arange(Lp, device=q.device)
    k_pos = _spans(pos[:, None], blk, before, after, -2 * (Lp + window))[..., 0]  # [n, S*blk]
    rel = pos.view(n, blk, 1) - k_pos[:, None, :]  # [n, blk, S*blk]: i - j
    near = ((rel >= 0) & (rel < window)) if causal else (rel.abs() < window)
    allowed = near & kvalid[:, None, :, None, :]  # [B|1, 1, n, blk, S*blk]
    o, lse = _attend(qb, kb, vb, allowed, scale, return_lse)
    return _finish(o, lse, L, return_lse)


# --------------------------------------------------------------------------- block gather
def dedupe_blocks(key_blocks: torch.Tensor) -> torch.Tensor:
    """Replace repeated entries of each row (last dim) and negative entries by -1."""
    same = key_blocks[..., :, None] == key_blocks[..., None, :]  # [..., m, m]
    earlier = torch.ones(same.shape[-2:], dtype=torch.bool, device=same.device).tril(-1)
    repeated = (same & earlier).any(-1)
    return key_blocks.masked_fill(repeated | (key_blocks < 0), -1)


def block_gather_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_blocks: torch.Tensor,
    block_size: int,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    *,
    scale: float | None = None,
    return_lse: bool = False,
):
    """Block-sparse attention from a per-query-block list of key blocks.

    ``q, k, v: [B, H, L, Dh]``; ``key_blocks``: integer ``[B|1, H|1, n, m]`` with
    ``n = ceil(L / block_size)``: query block ``i`` attends to the union of key blocks
    ``key_blocks[b, h, i, :]`` (entries in ``[0, n)``; repeats count once; -1 = no block).
    ``causal`` additionally masks keys after the query (token level), ``key_mask`` padded keys.
    Cost ``O(L * m * block_size * Dh)``: the gathered K/V are ``[B, H, n, m * block_size, Dh]``.
    Rows are grouped by their number of distinct blocks and each group gathers only those
    (causal layouts, clipped neighbour lists and de-duplicated rows do not pay for empty entries).
    """
    B, H, L, Dh = q.shape
    blk = block_size
    n = -(-L // blk)
    if key_blocks.dim() != 4 or key_blocks.shape[2] != n:
        raise ValueError(f"key_blocks must be [B|1, H|1, {n}, m], got {tuple(key_blocks.shape)}")
    scale = Dh**-0.5 if scale is None else scale
    q, k, v = (_pad_len(t, blk, 2) for t in (q, k, v))
    qb = rearrange(q, "b h (n i) d -> b h n i d", i=blk)  # [B, H, n, blk, Dh]
    valid = None
    if key_mask is not None or n * blk != L:
        valid = _key_valid(key_mask, B, L, n * blk, q.device).view(-1, n, blk)  # [B|1, n, blk]
    tbl = dedupe_blocks(key_blocks.to(q.device, torch.long))  # [B|1, H|1, n, m]
    k, v = (rearrange(t, "b h (n i) d -> (b h n) (i d)", i=blk) for t in (k, v))  # [B*H*n, blk*Dh]
    # Group the query blocks by their number c of distinct key blocks (the most over batch and
    # heads) and run each group at its own width: empty entries cost nothing where all rows agree.
    rows = tbl.sort(dim=-1, descending=True).values  # [B|1, H|1, n, m], distinct blocks first
    count = (rows >= 0).sum(-1).amax(dim=(0, 1)).clamp(min=1)  # [n]
    outs, lses, order = [], [], []
    for c in sorted(set(count.tolist())):
        ids = (count == c).nonzero().flatten()  # the r query blocks with c key blocks
        sub = rows[:, :, ids, :c].expand(B, H, -1, -1)  # [B, H, r, c]
        kg, vg = (_gather(t, sub, Dh).unflatten(2, (ids.numel(), -1)) for t in (k, v))  # [B, H, r, c*blk, Dh]
        o, lse = _gathered_attend(qb.index_select(2, ids), kg, vg, sub, ids, valid, causal, scale, return_lse)
        outs.append(o)
        lses.append(lse)
        order.append(ids)
    order = torch.cat(order)
    inverse = torch.argsort(order)
    o = torch.cat(outs, dim=2).index_select(2, inverse)
    lse = torch.cat(lses, dim=2).index_select(2, inverse) if return_lse else None
    return _finish(o, lse, L, return_lse)


def _gather(x: torch.Tensor, tbl: torch.Tensor, Dh: int) -> torch.Tensor:
    """Blocks ``x: [B*H*n, blk*Dh]`` listed by ``tbl: [B, H, *idx]`` (-1 read as 0) ->
    ``[B, H, prod(idx) * blk, Dh]``: one flat index_select (its backward is one index_add)."""
    B, H = tbl.shape[:2]
    n = x.shape[0] // (B * H)
    base = (torch.arange(B, device=x.device)[:, None] * H + torch.arange(H, device=x.device)) * n  # [B, H]
    flat = (base.view(B, H, *[1] * (tbl.dim() - 2)) + tbl.clamp(min=0)).reshape(-1)
    return x.index_select(0, flat).view(B, H, -1, Dh)


def _gathered_attend(qb, kg, vg, tbl, q_blocks, valid, causal, scale, return_lse):
    """Query blocks ``qb: [B, H, r, blk, Dh]`` (block numbers ``q_blocks: [r]``) against their
    gathered key blocks ``kg, vg: [B, H, r, c * blk, Dh]``, listed in ``tbl: [B|1, H|1, r, c]``
    (-1 = none): builds the mask (holes, padded keys, causal) and attends."""
    B, H, r, blk, Dh = qb.shape
    tbl = tbl.expand(B, H, r, -1)
    c = tbl.shape[-1]
    idx = tbl.clamp(min=0)
    allowed = None
    if valid is not None or bool((tbl < 0).any()):
        allowed = (tbl >= 0)[..., None].expand(B, H, r, c, blk)  # [B, H, r, c, blk]
        if valid is not None:
            n = valid.shape[1]
            allowed = allowed & valid.expand(B, n, blk)[torch.arange(B, device=qb.device)[:, None, None, None], idx]
        allowed = allowed.flatten(-2)[:, :, :, None, :]  # [B, H, r, 1, c*blk]
    if causal:
        q_pos = q_blocks[:, None] * blk + torch.arange(blk, device=qb.device)  # [r, blk]
        k_pos = (idx[..., None] * blk + torch.arange(blk, device=qb.device)).flatten(-2)  # [B, H, r, c*blk]
        later = k_pos[:, :, :, None, :] > q_pos[:, :, None]  # [B, H, r, blk, c*blk]
        allowed = ~later if allowed is None else allowed & ~later
    return _attend(qb, kg, vg, allowed, scale, return_lse)


def merge_attention(o1, lse1, o2, lse2):
    """Exact softmax over the union of two disjoint key sets from the two partial results
    ``o: [..., L, Dh]``, ``lse: [..., L]``; returns ``(o, lse)``."""
    lse = torch.logaddexp(lse1, lse2)
    o = o1 * (lse1 - lse).exp()[..., None] + o2 * (lse2 - lse).exp()[..., None]
    return o, lse
