"""``linformer`` against the plain formula of eq. 7 written here (explicit per-head loop), float64.

Tolerance: rtol=atol=1e-10 (same algorithm, different summation order).
"""

import pytest
import torch

import longseq

TOL = dict(rtol=1e-10, atol=1e-10)


def plain_linformer(m, x, mask):
    """head_i = softmax(Q_i (E_i K_i)^T / sqrt(Dh)) (F_i V_i), padded rows of K, V zeroed first."""
    B, L, d = x.shape
    H, Dh = m.num_heads, d // m.num_heads
    q, k, v = (x @ m.qkv.weight.T).split(d, dim=-1)
    if mask is not None:
        k, v = k * mask[..., None], v * mask[..., None]
    outs = []
    for i in range(H):
        sl = slice(i * Dh, (i + 1) * Dh)
        E = m.E[i if m.E.shape[0] > 1 else 0, :, :L]  # [k, L]
        Fm = E if m.F is None else m.F[i if m.F.shape[0] > 1 else 0, :, :L]
        kp, vp = E @ k[..., sl], Fm @ v[..., sl]  # [B, k, Dh]
        a = torch.softmax(q[..., sl] @ kp.transpose(1, 2) / Dh**0.5, dim=-1)  # [B, L, k]
        outs.append(a @ vp)
    y = torch.cat(outs, -1) @ m.out.weight.T
    return y if mask is None else y * mask[..., None]


@pytest.mark.parametrize("sharing", ["headwise", "kv", "none"])
@pytest.mark.parametrize(
    "L,d,h,kk,masked",
    [
        (1, 24, 2, 8, False),
        (63, 24, 3, 16, True),
        (65, 120, 2, 16, False),
        (300, 24, 2, 32, True),
        (320, 24, 2, 16, True),
    ],
)
def test_matches_plain_formula_values_and_grads(sharing, L, d, h, kk, masked):
    """L < max_len uses the first L columns of E, F; L == max_len (320) takes them whole."""
    torch.manual_seed(L + d)
    m = longseq.mixers.build("linformer", d, num_heads=h, k=kk, max_len=320, sharing=sharing).double()
    x = torch.randn(2, L, d, dtype=torch.float64)
    mask = (torch.arange(L)[None] < torch.tensor([L, max(1, L // 3)])[:, None]) if masked else None
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    params = list(m.parameters())
    ya = m(xa, mask)
    ga = torch.autograd.grad((ya * ya.detach().cos()).sum(), [xa] + params)
    yb = plain_linformer(m, xb, mask)
    gb = torch.autograd.grad((yb * yb.detach().cos()).sum(), [xb] + params, allow_unused=True)
    torch.testing.assert_close(ya, yb, **TOL)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)


def test_parameter_counts_of_sharing_modes():
    count = lambda **kw: sum(
        p.numel()
        for n, p in longseq.mixers.build(  # noqa: E731
            "linformer", 16, num_heads=4, k=8, max_len=50, **kw
        ).named_parameters()
        if n in ("E", "F")
    )
    assert count(sharing="headwise") == 2 * 8 * 50
    assert count(sharing="kv") == 8 * 50
    assert count(sharing="none") == 4 * 2 * 8 * 50


def test_max_len_and_option_errors():
    m = longseq.mixers.build("linformer", 16, num_heads=2, k=8, max_len=40)
    m(torch.randn(1, 40, 16))
    with pytest.raises(ValueError, match="max_len=40"):
        m(torch.randn(1, 41, 16))
    with pytest.raises(ValueError, match="causal"):
        longseq.mixers.build("linformer", 16, causal=True)
    with pytest.raises(ValueError, match="sharing"):
        longseq.mixers.build("linformer", 16, sharing="layerwise")
    with pytest.raises(ValueError, match="k "):
        longseq.mixers.build("linformer", 16, k=0)


def test_large_inputs_finite_and_bf16_forward():
    m = longseq.mixers.build("linformer", 32, num_heads=2, k=16, max_len=128)
    y = m(100 * torch.randn(2, 100, 32))
    assert torch.isfinite(y).all()
    yb = m.to(torch.bfloat16)(torch.randn(2, 100, 32, dtype=torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()
