"""s4d and dss mixers: fast path (FFT convolution) and recurrent step == the naive unrolled
recurrence x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k) + D u_k written here (float64, values and
gradients), bidirectional mode == a forward plus a strictly-backward recurrence, parameter groups."""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.optim import param_groups
from reference import assert_matches_reference

TOL = dict(rtol=1e-8, atol=1e-10)


def naive_s4d_ssm(m, u):
    """u [B, H, L] -> SSM(u) + D u by the plainly unrolled recurrence (causal and bidirectional)."""
    A, B, C, dt = m.kernel.continuous()
    dtA = dt[:, None] * A
    if m.kernel.disc == "zoh":
        dA, dB = torch.exp(dtA), (torch.exp(dtA) - 1) / A * B
    else:
        dA, dB = (1 + dtA / 2) / (1 - dtA / 2), dt[:, None] * B / (1 - dtA / 2)
    L = u.shape[-1]

    def run(Cc, seq):
        x = torch.zeros(u.shape[0], *A.shape, dtype=A.dtype)
        ys = []
        for k in range(L):
            x = dA * x + dB * seq[..., k, None]
            ys.append(2 * (Cc * x).sum(-1).real)
        return torch.stack(ys, -1)

    y = run(C[0], u)
    if not m.causal:  # second kernel over the strict future: the reversed recurrence, shifted by one
        y = y + F.pad(run(C[1], u.flip(-1)), (1, 0))[..., :L].flip(-1)
    return y + m.D[:, None] * u


def naive_dss_exp_ssm(m, u):
    lam = torch.complex(-torch.exp(m.kernel.Lambda_re), m.kernel.Lambda_im)
    dt = torch.exp(m.kernel.log_dt)[:, None]
    W = torch.view_as_complex(m.kernel.W)
    dA, dB = torch.exp(lam * dt), (torch.exp(lam * dt) - 1) / lam  # DSS_exp = ZOH with B = 1
    L = u.shape[-1]
    x = torch.zeros(u.shape[0], *lam.shape, dtype=lam.dtype)
    ys = []
    for k in range(L):
        x = dA * x + dB * u[..., k, None]
        ys.append((W[0] * x).sum(-1).real)
    return torch.stack(ys, -1) + m.D[:, None] * u


def layer(m, ssm_out):
    return F.glu(m.out(F.gelu(ssm_out.transpose(1, 2))), dim=-1)


CASES = [
    ("s4d", dict(init="lin", disc="zoh"), True),
    ("s4d", dict(init="inv", disc="bilinear"), True),
    ("s4d", dict(init="legs"), False),
    ("s4d", dict(init="real", disc="bilinear"), False),
    ("dss", dict(), True),
]


@pytest.mark.parametrize("name,opts,causal", CASES)
@pytest.mark.parametrize("L", [1, 63])
def test_fast_path_equals_recurrence_values_and_grads(name, opts, causal, L):
    torch.manual_seed(3)
    m = longseq.mixers.build(name, 12, causal=causal, d_state=6, **opts).double()
    with torch.no_grad():  # random, non-initial parameters
        for p in m.kernel.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, L, 12, dtype=torch.float64)
    ref_fn = naive_s4d_ssm if name == "s4d" else naive_dss_exp_ssm
    assert_matches_reference(m, lambda m, x, mask: layer(m, ref_fn(m, x.transpose(1, 2))), x, None, **TOL)
    if causal:  # the recurrent step reproduces the same outputs
        s = m.init_state(2)
        ys = []
        for t in range(L):
            y_t, s = m.step(x[:, t], s)
            ys.append(y_t)
        torch.testing.assert_close(torch.stack(ys, 1), m(x).detach(), **TOL)


def test_dss_softmax_bidirectional_and_errors():
    m = longseq.mixers.build("dss", 12, d_state=6, variant="softmax", l_max=80).double()
    x = torch.randn(2, 63, 12, dtype=torch.float64)
    assert torch.isfinite(m(x)).all()
    with pytest.raises(ValueError, match="l_max"):
        m(torch.randn(1, 81, 12, dtype=torch.float64))
    mc = longseq.mixers.build("dss", 12, causal=True, d_state=6, variant="softmax", l_max=80)
    with pytest.raises(ValueError, match="recurrent"):
        mc.init_state(1)
    with pytest.raises(ValueError, match="variant"):
        longseq.mixers.build("dss", 12, variant="sigmoid")
    with pytest.raises(ValueError, match="disc"):
        longseq.mixers.build("s4d", 12, disc="euler")
    with pytest.raises(ValueError, match="init"):
        longseq.mixers.build("s4d", 12, init="hippo")


@pytest.mark.parametrize("name", ["s4d", "dss"])
def test_ssm_parameters_get_their_own_group(name):
    m = longseq.mixers.build(name, 16, causal=True, ssm_lr=2e-3)
    groups = param_groups(m, lr=1e-2, weight_decay=0.05)
    ssm = [g for g in groups if g["lr"] == 2e-3]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    expected = (
        {"kernel.log_dt", "kernel.log_A_real", "kernel.A_imag", "kernel.B"}
        if name == "s4d"
        else {"kernel.log_dt", "kernel.Lambda_re", "kernel.Lambda_im"}
    )
    assert set(ssm[0]["names"]) == expected
    others = {n for g in groups if g["lr"] == 1e-2 for n in g["names"]}
    assert "out.weight" in others and "kernel.C" not in expected


@pytest.mark.parametrize("name", ["s4d", "dss"])
def test_bf16_forward_and_large_inputs(name):
    m = longseq.mixers.build(name, 16, causal=True)
    x = torch.randn(1, 300, 16) * 100
    assert torch.isfinite(m(x)).all()
    assert m.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_legs_init_cache_survives_a_meta_build():
    """The arena counts parameters on the meta device; the cached LegS init must stay real."""
    with torch.device("meta"):
        longseq.mixers.build("dss", 16)
    m = longseq.mixers.build("dss", 16)
    assert all(p.device.type == "cpu" for p in m.parameters())
    assert torch.isfinite(m(torch.randn(1, 9, 16))).all()
