"""longseq.ops.favor (FAVOR+ features and blocked bidirectional FAVOR+ attention, hand-written
backwards) against their naive twins (the features composed from torch functions with a detached
stabiliser, the dense normalised attention), float64: values and the gradients of the inputs
(rtol 1e-9 / atol 1e-10; the random-feature matrix ``w`` is a fixed draw, not differentiated, as
in the mixer), queries and keys, padded keys and a running max, odd lengths over several blocks,
a second backward through a retained graph, bfloat16 smoke runs."""

import pytest
import torch

from longseq.mixers.linear_attention import draw_random_features
from longseq.ops.favor import (
    favor_attention_bidirectional,
    favor_attention_bidirectional_naive,
    favor_softmax_features,
    favor_softmax_features_naive,
)
from longseq.ops.favor.fused import _FavorBidirectional, _FavorFeatures

from .twins import bf16_smoke, check_twin

TOL = dict(rtol=1e-9, atol=1e-10)


def _mask(L):
    return torch.arange(L)[None] < torch.tensor([L, max(1, L // 3)])[:, None]  # [2, L], second padded


@pytest.mark.parametrize("L", [1, 37])
@pytest.mark.parametrize(
    "is_query,masked,running", [(True, False, False), (False, False, False), (False, True, False), (False, True, True)]
)
def test_favor_features_twin(L, is_query, masked, running):
    torch.manual_seed(L)
    x, w = torch.randn(2, 3, L, 8, dtype=torch.float64), draw_random_features(13, 8, dtype=torch.float64)
    mask = _mask(L) if masked else None
    running_max = torch.full((2, 3), 5.0, dtype=torch.float64) if running else None
    kw = dict(is_query=is_query, mask=mask, running_max=running_max)
    check_twin(
        lambda x: favor_softmax_features(x, w, **kw),
        lambda x: favor_softmax_features_naive(x, w, **kw),
        [x],
        **TOL,
        functions=(_FavorFeatures,),
    )


@pytest.mark.parametrize("L,block", [(1, 4), (37, 8), (130, 1024)])
@pytest.mark.parametrize("masked", [False, True])
def test_favor_bidirectional_twin(L, block, masked):
    torch.manual_seed(L)
    q, k, v = (torch.randn(2, 3, L, 8, dtype=torch.float64) for _ in range(3))
    w = draw_random_features(13, 8, dtype=torch.float64)
    mask = _mask(L) if masked else None
    check_twin(
        lambda q, k, v: favor_attention_bidirectional(q, k, v, w, mask, block_size=block),
        lambda q, k, v: favor_attention_bidirectional_naive(q, k, v, w, mask),
        [q, k, v],
        **TOL,
        functions=(_FavorBidirectional,),
    )


def test_favor_bf16_smoke():
    w = draw_random_features(13, 8).to(torch.bfloat16)
    x = torch.randn(2, 3, 37, 8)
    assert bf16_smoke(lambda x: favor_softmax_features(x, w, is_query=False, mask=_mask(37))[0], [x]) == "runs"
    assert (
        bf16_smoke(lambda q, k, v: favor_attention_bidirectional(q, k, v, w, _mask(37), block_size=8), [x, x, x])
        == "runs"
    )
