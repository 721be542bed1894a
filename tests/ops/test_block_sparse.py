"""longseq.ops.block_sparse (sliding-window and block-gather softmax attention, O(N x keys) memory)
against the naive twins (the dense L x L masked softmax of ``masked_attention_naive`` with the
masks of ``local_mask`` / ``block_mask``), float64: outputs and log-sum-exps, the gradients of
``q, k, v`` (rtol 1e-9 / atol 1e-10), odd lengths (padded internally), padded keys, repeated and
empty table entries, a second backward through a retained graph, bfloat16 smoke runs. Query rows
with no allowed key (padded queries only) are excluded from the comparison: the fast kernels give
them uniform weights, the twin zeros. The mixers: tests/test_local_attention.py,
tests/test_block_sparse_attention.py."""

import pytest
import torch

from longseq.ops.block_sparse import (
    block_gather_attention,
    block_mask,
    local_attention,
    local_mask,
    masked_attention_naive,
    merge_attention,
)

from .twins import bf16_smoke, check_twin

TOL = dict(rtol=1e-9, atol=1e-10)


def _qkv(L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 2, L, 6, generator=g, dtype=torch.float64) for _ in range(3)]


def _key_mask(L):
    return torch.arange(L)[None] < torch.tensor([L, max(1, L - 5)])[:, None]  # [2, L]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L,window,block", [(1, 3, None), (29, 4, None), (29, 5, 3), (64, 16, 8)])
@pytest.mark.parametrize("masked", [False, True])
def test_local_attention_twin(causal, L, window, block, masked):
    km = _key_mask(L) if masked else None
    allowed = local_mask(L, window, causal)
    real = (allowed & (km[:, None, :] if masked else True)).any(-1)  # rows with a key
    pick = lambda outs: [outs[0][real[:, None, :, None].expand_as(outs[0])] if masked else outs[0], outs[1]]  # noqa: E731
    check_twin(
        lambda q, k, v: local_attention(q, k, v, window, causal, km, block_size=block, return_lse=True),
        lambda q, k, v: masked_attention_naive(q, k, v, allowed, km),
        _qkv(L, seed=L),
        **TOL,
        compare=lambda outs: pick(outs)[:1] if masked else outs,
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L,bs", [(7, 4), (29, 4), (48, 8)])
def test_block_gather_attention_twin(causal, L, bs):
    n = -(-L // bs)
    g = torch.Generator().manual_seed(L)
    table = torch.randint(-1, n, (1, 2, n, 3), generator=g)
    table[..., 0] = torch.arange(n)  # own block: no empty row
    table[0, 0, 0, 1] = 0  # a repeated entry
    allowed = block_mask(table, bs, L, causal)[0]  # [2, L, L]
    check_twin(
        lambda q, k, v: block_gather_attention(q, k, v, table, bs, causal=causal, return_lse=True),
        lambda q, k, v: masked_attention_naive(q, k, v, allowed[None]),
        _qkv(L, seed=L),
        **TOL,
    )


def test_bf16_smoke():
    q, k, v = _qkv(29)
    assert bf16_smoke(lambda q, k, v: local_attention(q, k, v, 4, True), [q, k, v]) == "runs"
    table = torch.arange(8)[None, None, :, None].expand(1, 1, 8, 1)
    assert bf16_smoke(lambda q, k, v: block_gather_attention(q, k, v, table, 4, causal=True), [q, k, v]) == "runs"


# ---------------------------------------------------------------------------- moved from the mixers' tests
@pytest.mark.parametrize("window,block", [(5, 2), (8, 3), (7, 16)])
def test_local_block_size_is_only_a_schedule(window, block):
    """Any query-block size gives the same result; lse merges two disjoint halves exactly."""
    q, k, v = (torch.randn(2, 3, 50, 6, dtype=torch.float64) for _ in range(3))
    for causal in (True, False):
        o1, lse1 = local_attention(q, k, v, window, causal, return_lse=True)
        o2 = local_attention(q, k, v, window, causal, block_size=block)
        torch.testing.assert_close(o1, o2, **TOL)
        _, ref_lse = masked_attention_naive(q, k, v, local_mask(50, window, causal))
        torch.testing.assert_close(lse1, ref_lse, **TOL)
    # merge: keys split into even/odd positions give the full-attention result
    even = torch.zeros(50, dtype=torch.bool)
    even[::2] = True
    oa, la = local_attention(q, k, v, 50, False, even[None].expand(2, 50), return_lse=True)
    ob, lb = local_attention(q, k, v, 50, False, ~even[None].expand(2, 50), return_lse=True)
    o, _ = merge_attention(oa, la, ob, lb)
    full = torch.softmax((q @ k.transpose(-1, -2)) / 6**0.5, -1) @ v
    torch.testing.assert_close(o, full, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_gather_op_handles_repeats_and_empty_entries(causal):
    """Any table, per batch and head: repeats count once, -1 entries are ignored, keys of a padded
    tail are masked."""
    B, H, L, bs = 2, 3, 22, 4
    n = -(-L // bs)
    q, k, v = (torch.randn(B, H, L, 5, dtype=torch.float64) for _ in range(3))
    tbl = torch.randint(-1, n, (B, H, n, 4))
    tbl[..., 0] = torch.arange(n)  # every query sees its own block
    tbl[..., 1] = tbl[..., 2]  # a repeat
    key_mask = torch.arange(L)[None] < torch.tensor([L, 15])[:, None]
    ref, ref_lse = masked_attention_naive(q, k, v, block_mask(tbl, bs, L, causal), key_mask)
    out, lse = block_gather_attention(q, k, v, tbl, bs, key_mask, causal, return_lse=True)
    real = key_mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], **TOL)
    torch.testing.assert_close(lse[real[..., 0]], ref_lse[real[..., 0]], **TOL)
