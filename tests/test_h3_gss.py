"""h3 against its equations unrolled token by token (float64, values and gradients of inputs and
all parameters, rtol 1e-8 / atol 1e-10), for both discretisations of its diagonal SSM (the
discrete ``Ā, B̄`` formed here from the continuous parameters by the textbook formulas, not by
``longseq.ssm.discretize``). gss: tests/test_gss.py."""

import pytest
import torch

import longseq
import longseq.ops.h3.fused as h3_core_module
from longseq.optim import param_groups
from reference import assert_matches_reference

TOL = dict(rtol=1e-8, atol=1e-10)


def discrete(A, B, dt, disc):
    """``(Ā, B̄)`` of a diagonal ``A [H, N/2]`` with step ``dt [H]``: zero-order hold (S4D eq. (5))
    or bilinear (S4 eq. (3): ``Ā = (I - Δ/2 A)^{-1} (I + Δ/2 A)``, ``B̄ = (I - Δ/2 A)^{-1} Δ B``)."""
    dt = dt[:, None]
    if disc == "zoh":
        return torch.exp(dt * A), (torch.exp(dt * A) - 1) / A * B
    assert disc == "bilinear"
    inv = 1 / (1 - dt / 2 * A)
    return inv * (1 + dt / 2 * A), inv * dt * B


def naive_h3(m, x):
    """H3 Algorithm 1 as a recurrence: shift register for K, diagonal state for K'V^T."""
    Bsz, L, d = x.shape
    hd, nh, N = m.hd, m.nh, m.shift_C.shape[1]
    A, Bc, C, dt = m.kernel.continuous()
    dA, dB = discrete(A, Bc, dt, m.kernel.disc)  # [H, N/2]
    q, k, v = m.q_proj(x), m.k_proj(x), m.v_proj(x)
    reg = torch.zeros(Bsz, d, N, dtype=x.dtype)  # shift SSM state x_l = [k_l, k_{l-1}, ...]
    s = torch.zeros(Bsz, hd, hd, nh, N // 2, dtype=A.dtype)
    outs = []
    for l in range(L):
        reg = torch.cat([k[:, l, :, None], reg[..., :-1]], -1)
        kk = (reg * m.shift_C).sum(-1) + m.shift_D * k[:, l]  # [B, d]
        kv = kk.view(Bsz, nh, hd)[:, :, :, None] * v[:, l].view(Bsz, nh, hd)[:, :, None, :]  # [B, H, i, j]
        kv = kv.permute(0, 2, 3, 1)  # [B, i, j, H]
        s = dA * s + dB * kv[..., None]
        y = 2 * (C[0] * s).sum(-1).real + m.D * kv  # [B, i, j, H]
        o = (q[:, l].view(Bsz, nh, hd).permute(0, 2, 1)[:, :, None, :] * y).sum(1)  # [B, j, H]
        outs.append(o.permute(0, 2, 1).reshape(Bsz, d))  # (h j)
    return m.out(torch.stack(outs, 1))


def perturb(m):
    with torch.no_grad():
        for p in m.kernel.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def check(m, ref, L, d):
    x = torch.randn(2, L, d, dtype=torch.float64)
    assert_matches_reference(m, lambda m, x, mask: ref(m, x), x, None, **TOL)
    if m.causal:
        s = m.init_state(2)
        ys = []
        for t in range(L):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), m(x).detach(), **TOL)


@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
@pytest.mark.parametrize("method", ["chunked", "fft"])
@pytest.mark.parametrize("head_dim,chunk_size", [(1, None), (3, 5), (None, 16)])
@pytest.mark.parametrize("L", [1, 37])
def test_h3_equals_recurrence(head_dim, chunk_size, L, method, disc):
    torch.manual_seed(4)
    m = perturb(
        longseq.mixers.build(
            "h3",
            12,
            num_heads=2,
            causal=True,
            d_state=6,
            head_dim=head_dim,
            chunk_size=chunk_size,
            method=method,
            disc=disc,
        ).double()
    )
    assert m.hd == (6 if head_dim is None else head_dim)
    check(m, naive_h3, L, 12)


@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
@pytest.mark.parametrize("head_dim", [1, 3])
@pytest.mark.parametrize("L", [17, 489])
def test_h3_head_groups_equal_recurrence(head_dim, L, disc, monkeypatch):
    """The training path (projections and Algorithm 1 over groups of heads, recomputed in the
    backward) with several groups, the last partial: values and gradients of the input and every
    parameter against the token-by-token recurrence."""
    monkeypatch.setattr(h3_core_module, "_heads_per_group", lambda hd, batch, L: 3)
    torch.manual_seed(5)
    m = perturb(longseq.mixers.build("h3", 24, causal=True, d_state=6, head_dim=head_dim, disc=disc).double())
    x = torch.randn(2, L, 24, dtype=torch.float64)
    assert_matches_reference(m, lambda m, x, mask: naive_h3(m, x), x, None, **TOL)


def test_h3_training_path_second_backward():
    """The training path's backward overwrites the Q, K, V it kept with their gradients and drops
    them; a second backward through a retained graph recomputes them: the same gradients."""
    torch.manual_seed(6)
    m = perturb(longseq.mixers.build("h3", 12, causal=True, d_state=6).double())
    x = torch.randn(2, 70, 12, dtype=torch.float64, requires_grad=True)
    y = m(x)
    loss = (y * torch.randn_like(y)).sum()
    leaves = [x, *m.parameters()]
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_default_is_the_official_bilinear_kernel():
    """The default diagonal SSM is the official code's bilinear one: its convolution kernel equals
    the impulse response of the bilinear-discretised recurrence ``s_l = Ā s_{l-1} + B̄ u_l``,
    ``y_l = 2 Re(C s_l)``, run directly in float64 (rtol 1e-10 / atol 1e-12); the ZOH kernel
    differs from it."""
    torch.manual_seed(7)
    m = perturb(longseq.mixers.build("h3", 8, causal=True, d_state=10).double())
    assert m.kernel.disc == "bilinear"
    A, Bc, C, dt = m.kernel.continuous()
    dA, dB = discrete(A, Bc, dt, "bilinear")
    L, s, ref = 50, torch.zeros_like(dA), []
    for l in range(L):
        s = dA * s + (dB if l == 0 else 0)  # unit impulse
        ref.append(2 * (C[0] * s).sum(-1).real)
    torch.testing.assert_close(m.kernel.kernel(L)[0], torch.stack(ref, -1), rtol=1e-10, atol=1e-12)
    zoh = longseq.mixers.build("h3", 8, causal=True, d_state=10, disc="zoh").double()
    zoh.load_state_dict(m.state_dict())
    assert (zoh.kernel.kernel(L) - m.kernel.kernel(L)).abs().max() > 1e-6


def test_options_and_errors():
    with pytest.raises(ValueError, match="disc must be one of 'zoh', 'bilinear'"):
        longseq.mixers.build("h3", 12, causal=True, disc="euler")
    with pytest.raises(ValueError, match="bidirectional"):
        longseq.mixers.build("h3", 12)
    with pytest.raises(ValueError, match="head_dim"):
        longseq.mixers.build("h3", 12, causal=True, head_dim=5)
    with pytest.raises(ValueError, match="chunk_size"):
        longseq.mixers.build("h3", 12, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="'block_size' is now 'chunk_size'"):
        longseq.mixers.build("h3", 12, causal=True, block_size=16)


def test_ssm_parameters_get_their_own_group():
    m = longseq.mixers.build("h3", 16, causal=True, d_state=8, ssm_lr=5e-4)
    groups = param_groups(m, lr=1e-2, weight_decay=0.05)
    ssm = [g for g in groups if g["lr"] == 5e-4]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    assert {n.split(".")[-1] for n in ssm[0]["names"]} >= {"log_dt"}
    assert all(n.startswith("kernel.") for n in ssm[0]["names"])


def test_bf16_forward_and_large_inputs():
    m = longseq.mixers.build("h3", 16, causal=True, d_state=8)
    x = torch.randn(1, 300, 16) * 100
    assert torch.isfinite(m(x)).all()
    assert m.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16
