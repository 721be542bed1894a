"""S5 (Smith et al. 2023): the scan path against a plainly unrolled recurrence, in float64.

Reference: ZOH computed independently with ``torch.linalg.matrix_exp`` of the augmented matrix
``[[ΛΔ, B̃Δ], [0, 0]]`` (its top-right block is ``Λ^{-1}(e^{ΛΔ} - I) B̃``), then
``x_k = Λ̄ x_{k-1} + B̄ u_k``, ``y_k = 2 Re(C̃ x_k) + D u_k`` in a Python loop (plus the reversed
scan with ``C̃_2`` when bidirectional). Tolerances: rtol 1e-9 / atol 1e-10 (float64).
"""

import math

import pytest
import torch

import longseq
import longseq.mixers.s5 as s5_module
from longseq.optim import param_groups

TOL = dict(rtol=1e-9, atol=1e-10)
H = 12


def make(causal, seed=0, **kw):
    torch.manual_seed(seed)
    opts = dict(d_state=8, blocks=2, chunk_size=4, activation="none")
    opts.update(kw)
    m = longseq.mixers.build("s5", H, causal=causal, **opts).double()
    with torch.no_grad():  # random (not init) parameters, kept stable
        m.Lambda_re.uniform_(-1.0, -0.05)
        m.Lambda_im.normal_(0, 3)
        m.B.normal_()
        m.C.normal_()
        m.log_dt.uniform_(math.log(1e-2), math.log(0.5))
    return m


def zoh_reference(m):
    Lam = torch.complex(m.Lambda_re.clamp(max=-1e-4), m.Lambda_im)
    B = torch.view_as_complex(m.B)
    dt = m.log_dt.exp()
    Ps, Hs = B.shape
    Lbar, Bbar = [], []
    for p in range(Ps):  # one state at a time: expm of [[λΔ, b Δ], [0, 0]]
        M = torch.zeros(1 + Hs, 1 + Hs, dtype=torch.complex128)
        M[0, 0] = Lam[p] * dt[p]
        M[0, 1:] = B[p] * dt[p]
        E = torch.linalg.matrix_exp(M)
        Lbar.append(E[0, 0])
        Bbar.append(E[0, 1:])
    return torch.stack(Lbar), torch.stack(Bbar)


def naive(m, x):
    Lbar, Bbar = zoh_reference(m)
    C = torch.view_as_complex(m.C)
    u = x.to(torch.complex128)

    def run(order, Cd):
        h = torch.zeros(x.shape[0], Lbar.shape[0], dtype=torch.complex128)
        ys = [None] * x.shape[1]
        for t in order:
            h = Lbar * h + u[:, t] @ Bbar.T
            ys[t] = 2 * (h @ Cd.T).real
        return torch.stack(ys, 1)

    y = run(range(x.shape[1]), C[0])
    if not m.causal:
        y = y + run(reversed(range(x.shape[1])), C[1])
    return y + m.D * x


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 17, 130])
def test_scan_equals_unrolled_recurrence(causal, L):
    m = make(causal)
    x = torch.randn(2, L, H, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref = naive(m, x)
    torch.testing.assert_close(y, y_ref, **TOL)
    w = torch.randn_like(y)
    params = [m.Lambda_re, m.Lambda_im, m.B, m.C, m.D, m.log_dt]
    g = torch.autograd.grad((y * w).sum(), [x] + params)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x] + params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL)


def naive_post(m, y):
    g = torch.nn.functional.gelu(y)
    gate = torch.sigmoid(g @ m.gate.weight.T + m.gate.bias)
    return (g if m.activation == "half_glu1" else y) * gate


@pytest.mark.parametrize("activation", ["half_glu1", "half_glu2"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 489])
def test_gated_outputs_equal_autograd(activation, causal, L, monkeypatch):
    """The row-blocked gated outputs (own backward, recomputing GELU and the gate) against the
    plain formula on the unrolled recurrence: values and gradients of the input and every
    parameter (several row blocks, the last partial). rtol 1e-7 / atol 1e-8: the reference's
    ZOH (matrix exponential) and loop differ from the scan by ~1e-10 after 489 steps."""
    monkeypatch.setattr(s5_module, "_gate_rows", lambda d: 100)
    m = make(causal, activation=activation)
    x = torch.randn(2, L, H, dtype=torch.float64, requires_grad=True)
    y, y_ref = m(x), naive_post(m, naive(m, x))
    tol = dict(rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(y, y_ref, **tol)
    w = torch.randn_like(y)
    params = [x] + list(m.parameters())
    for a, b in zip(torch.autograd.grad((y * w).sum(), params), torch.autograd.grad((y_ref * w).sum(), params)):
        torch.testing.assert_close(a, b, **tol)


def test_step_and_split_match_reference():
    m = make(True, activation="half_glu1")
    x = torch.randn(2, 23, H, dtype=torch.float64)
    y = m(x)
    g = m.gate
    ref = naive(m, x)
    ref = torch.nn.functional.gelu(ref) * torch.sigmoid(g(torch.nn.functional.gelu(ref)))
    torch.testing.assert_close(y, ref, **TOL)
    s = m.init_state(2)
    ys = []
    for t in range(x.shape[1]):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    y1, s = m(x[:, :9], return_state=True)
    y2, _ = m(x[:, 9:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)


def test_init_is_block_hippo_n():
    m = longseq.mixers.build("s5", H, causal=True, d_state=16, blocks=2)
    torch.testing.assert_close(m.Lambda_re, torch.full((8,), -0.5))
    lam_im = m.Lambda_im
    torch.testing.assert_close(lam_im[:4], lam_im[4:])  # J = 2 identical blocks
    assert (lam_im > 0).all()  # conjugate symmetry: positive half kept
    dt = m.log_dt.exp()
    assert (dt >= 1e-3 - 1e-9).all() and (dt <= 1e-1 + 1e-9).all()


def test_ssm_params_have_own_group():
    m = longseq.mixers.build("s5", H, causal=True, d_state=8, blocks=2, ssm_lr=2e-3)
    groups = param_groups(m, lr=1e-2, weight_decay=0.1)
    ssm = [g for g in groups if set(g["names"]) == {"Lambda_re", "Lambda_im", "B", "log_dt"}]
    assert len(ssm) == 1 and ssm[0]["lr"] == 2e-3 and ssm[0]["weight_decay"] == 0.0
    other = {n for g in groups if g is not ssm[0] for n in g["names"]}
    assert {"C", "D"} <= other


@pytest.mark.parametrize("log_dt,causal", [(math.log(1e-3), True), (math.log(1e-1), False)])
def test_no_nan_at_64k_float32(log_dt, causal):
    torch.manual_seed(0)
    m = longseq.mixers.build("s5", 16, causal=causal, d_state=16, blocks=2)
    with torch.no_grad():
        m.log_dt.fill_(log_dt)
    x = (torch.randn(1, 65536, 16) * 100).requires_grad_(True)
    y = m(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_bf16_forward_runs():
    m = longseq.mixers.build("s5", 16, causal=True, d_state=8, blocks=1).to(torch.bfloat16)
    y = m(torch.randn(2, 33, 16, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"d_state": 10, "blocks": 2}, "d_state"),
        ({"blocks": 0}, "blocks"),
        ({"activation": "relu"}, "activation"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"chunk_size": 6}, "chunk_size"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        longseq.mixers.build("s5", 16, causal=True, **opts)
