"""longseq.ops.long_short.causal_long_short_attention (Transformer-LS causal kernel, query super-blocks,
recomputing backward) against its naive twin (the dense single softmax over both key sets),
float64: values and the gradients of ``q, q_w`` and the long-range and window keys/values (rtol
1e-9 / atol 1e-10), with and without cached window keys, padded keys (both masks), several
super-blocks, odd lengths, a second backward through a retained graph, bfloat16 smoke run."""

import pytest
import torch

from longseq.ops.long_short import causal_long_short_attention, causal_long_short_attention_naive
from longseq.ops.long_short.fused import _CausalLongShort

from .twins import bf16_smoke, check_twin


def _case(L, n_w, window, chunk, r, masked, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    B, H, Dh = 2, 2, 4
    r_ = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    n_mem, full = 3, L // chunk
    M = n_mem + full * r
    key_chunk = torch.cat([torch.full((n_mem,), -1), torch.arange(full).repeat_interleave(r)])  # [M], sorted
    q_chunk = torch.arange(L) // chunk  # [L]
    long_ok = win_ok = None
    if masked:
        long_ok = torch.rand(B, M, generator=g) > 0.3
        win_ok = torch.rand(B, n_w + L, generator=g) > 0.3
    tensors = [
        r_(B, H, L, Dh),
        r_(B, H, L, Dh),
        r_(B, H, M, Dh),
        r_(B, H, M, Dh),
        r_(B, H, n_w + L, Dh),
        r_(B, H, n_w + L, Dh),
    ]
    return tensors, (q_chunk, key_chunk, long_ok, win_ok)


@pytest.mark.parametrize("L,n_w,window,block", [(1, 0, 4, 4), (29, 0, 4, 8), (29, 3, 4, 12), (66, 5, 6, 12)])
@pytest.mark.parametrize("masked", [False, True])
def test_causal_long_short_twin(L, n_w, window, block, masked):
    tensors, (qc, kc, lok, wok) = _case(L, n_w, window, chunk=5, r=2, masked=masked, seed=L)
    check_twin(
        lambda *t: causal_long_short_attention(*t, qc, kc, lok, wok, n_w, window, block),
        lambda *t: causal_long_short_attention_naive(*t, qc, kc, lok, wok, n_w, window),
        tensors,
        rtol=1e-9,
        atol=1e-10,
        functions=(_CausalLongShort,),
    )


def test_causal_long_short_bf16_smoke():
    tensors, (qc, kc, lok, wok) = _case(29, 3, 4, 5, 2, True)
    assert bf16_smoke(lambda *t: causal_long_short_attention(*t, qc, kc, lok, wok, 3, 4, 8), tensors) == "runs"
