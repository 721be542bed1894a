"""``local`` (blockwise sliding window) against dense N x N softmax attention under the window mask.

Reference: the module's own projections, then ``softmax(q k^T / sqrt(d) + mask) v`` with the mask
written from the definition (causal ``0 <= i - j < window``, bidirectional ``|i - j| < window``,
padded keys removed). Compared in float64 (values and gradients of input and parameters) with
rtol=1e-9, atol=1e-10: the blockwise path only changes the summation order.
"""

import pytest
import torch
from einops import rearrange

import longseq

TOL = dict(rtol=1e-9, atol=1e-10)


def window_mask(L, window, causal):
    i, j = torch.arange(L)[:, None], torch.arange(L)[None, :]
    return ((i - j >= 0) & (i - j < window)) if causal else ((i - j).abs() < window)


def dense_reference(m, x, mask=None):
    """Full softmax attention of mixer ``m`` restricted to its window (N x N matrix)."""
    B, L, _ = x.shape
    q, k, v = rearrange(m.qkv(x), "b l (three h d) -> three b h l d", three=3, h=m.num_heads)
    if m.rope is not None:
        q, k = m.rope(q), m.rope(k)
    allowed = window_mask(L, m.window, m.causal)[None, None]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    s = (q @ k.transpose(-1, -2)) * m.head_dim**-0.5
    s = s.masked_fill(~allowed, float("-inf"))
    o = torch.nan_to_num(s.softmax(-1)) @ v  # padded queries may have no key at all
    y = m.out(rearrange(o, "b h l d -> b l (h d)"))
    return y if mask is None else y * mask[..., None]


def check_values_and_grads(m, x, mask=None):
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = m(xa, mask), dense_reference(m, xb, mask)
    torch.testing.assert_close(ya, yb, **TOL)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * g).sum(), [xa, *m.parameters()])
    gb = torch.autograd.grad((yb * g).sum(), [xb, *m.parameters()])
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "L,window,head_dim,rope",
    [
        (1, 8, 12, True),
        (63, 8, 12, True),
        (65, 8, 60, False),
        (65, 1, 12, False),
        (65, 100, 12, True),
        (200, 17, 12, True),
        (1000, 32, 4, False),
    ],
)
def test_matches_dense_reference(causal, L, window, head_dim, rope):
    m = longseq.mixers.build("local", 2 * head_dim, num_heads=2, causal=causal, window=window, rope=rope).double()
    x = torch.randn(2, L, 2 * head_dim, dtype=torch.float64)
    check_values_and_grads(m, x)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_mask_matches_reference(causal):
    m = longseq.mixers.build("local", 24, num_heads=2, causal=causal, window=8, rope=True).double()
    x = torch.randn(3, 67, 24, dtype=torch.float64)
    mask = torch.arange(67)[None] < torch.tensor([67, 30, 1])[:, None]
    mask[0, 10:13] = False  # a hole: those keys must be ignored too
    check_values_and_grads(m, x, mask)


def test_step_rolls_cache_and_state_is_bounded():
    m = longseq.mixers.build("local", 16, num_heads=2, causal=True, window=5, rope=True).double()
    x = torch.randn(2, 23, 16, dtype=torch.float64)
    y = m(x)
    state = m.init_state(2)
    outs = []
    for t in range(23):
        y_t, state = m.step(x[:, t], state)
        outs.append(y_t)
        assert state["k"].shape[2] == 5  # O(window) cache, never grows
    torch.testing.assert_close(torch.stack(outs, 1), y, **TOL)
    # chunked continuation with chunks shorter and longer than the window
    ys, s = [], None
    for a, b in [(0, 3), (3, 4), (4, 15), (15, 23)]:
        y_c, s = m(x[:, a:b], state=s, return_state=True)
        ys.append(y_c)
    torch.testing.assert_close(torch.cat(ys, 1), y, **TOL)
    assert m.state_size(10**6) == 2 * 16 * 5


@pytest.mark.parametrize("causal", [True, False])
def test_large_inputs_finite_and_bf16(causal):
    m = longseq.mixers.build("local", 32, num_heads=2, causal=causal, window=8, rope=True)
    x = (100 * torch.randn(2, 67, 32)).requires_grad_()
    y = m(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    yb = m.to(torch.bfloat16)(x.detach().to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_invalid_window():
    for bad in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="window"):
            longseq.mixers.build("local", 16, window=bad)
