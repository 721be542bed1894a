"""S4 (Gu et al. 2022): Cauchy + Woodbury kernel and FFT convolution against dense references.

References are written plainly here with the dense complex N x N DPLR matrix
``A = diag(Λ, conj Λ) - p p*``, the bilinear discretisation of eq. (3) by matrix inversion and
the true output matrix ``C = C̃ (I - Ā^l_max)^{-1}`` from the trained ``C̃`` by a dense inverse.
Float64 tolerances: rtol 1e-8 / atol 1e-10 (the kernel path uses FFTs).
"""

import math

import pytest
import torch

import longseq
import longseq.mixers.s4 as s4_module
from longseq.ops.cauchy import roots_of_unity
from longseq.optim import param_groups

TOL = dict(rtol=1e-8, atol=1e-10)
H = 3


def make(causal, seed=0, d_state=8, **kw):
    torch.manual_seed(seed)
    m = longseq.mixers.build("s4", H, causal=causal, d_state=d_state, pointwise=False, **kw).double()
    with torch.no_grad():  # random parameters, not the HiPPO init
        m.log_A_real.uniform_(-2, 0.5)
        m.A_imag.normal_(0, 5)
        m.P.normal_(0, 0.7)
        m.B.normal_()
        m.C.normal_()
        m.log_dt.uniform_(math.log(1e-2), math.log(0.3))
    return m


def dense(m):
    """Full complex Ā [H, N, N], B̄ [H, N], C [dirs, H, N] of eq. (3), by matrix inversion.

    ``C = C̃ (I - Ā^l_max)^{-1}`` (row vectors in the full complex state space).
    """
    Lam = torch.complex(-m.log_A_real.exp(), m.A_imag)
    P, B, C = (torch.view_as_complex(t) for t in (m.P, m.B, m.C))
    full = lambda v: torch.cat([v, v.conj()], -1)
    p = full(P)
    A = torch.diag_embed(full(Lam)) - p[:, :, None] * p.conj()[:, None, :]
    dt = m.log_dt.exp()[:, None, None]
    I = torch.eye(A.shape[-1], dtype=A.dtype)
    inv = torch.linalg.inv(I - dt / 2 * A)
    Abar = inv @ (I + dt / 2 * A)
    C = (full(C).unsqueeze(-2) @ torch.linalg.inv(I - torch.linalg.matrix_power(Abar, int(m.l_max)))).squeeze(-2)
    return Abar, (inv @ (dt * full(B)[..., None])).squeeze(-1), C


def naive(m, x):
    Abar, Bbar, C = dense(m)
    u = x.to(torch.complex128).transpose(1, 2)  # [B, H, L]
    Bsz, _, L = u.shape
    xs = torch.zeros(Bsz, H, Abar.shape[-1], dtype=torch.complex128)
    ys = []
    for t in range(L):
        xs = (Abar @ xs[..., None]).squeeze(-1) + Bbar * u[..., t, None]
        ys.append((C[0] * xs).sum(-1).real)
    y = torch.stack(ys, -1)
    if not m.causal:  # z_l = Σ_{m>l} Ā^{m-l-1} B̄ u_m
        z = torch.zeros_like(xs)
        back = [None] * L
        for t in reversed(range(L)):
            back[t] = (C[1] * z).sum(-1).real
            z = (Abar @ z[..., None]).squeeze(-1) + Bbar * u[..., t, None]
        y = y + torch.stack(back, -1)
    return (y + m.D[:, None] * x.transpose(1, 2)).transpose(1, 2)


@pytest.mark.parametrize("L", [1, 17, 489, 1047])
def test_kernel_equals_dense_powers(L):
    m = make(True)
    k = m.kernel(L, torch.float64)[0]  # [H, L]
    Abar, Bbar, C = dense(m)
    ref, v = [], Bbar
    for _ in range(L):
        ref.append((C[0] * v).sum(-1).real)
        v = (Abar @ v[..., None]).squeeze(-1)
    torch.testing.assert_close(k, torch.stack(ref, -1), **TOL)


def test_doubling_l_max_keeps_the_kernel():
    """An input longer than l_max converts C̃ in place (C̃_2l = C̃_l (I + Ā^l)): same true C, same kernel."""
    m = make(True, l_max=16)
    Abar, Bbar, C = dense(m)
    k = m.kernel(100, torch.float64)[0]
    assert int(m.l_max) == 128
    ref, v = [], Bbar
    for _ in range(100):
        ref.append((C[0] * v).sum(-1).real)
        v = (Abar @ v[..., None]).squeeze(-1)
    torch.testing.assert_close(k, torch.stack(ref, -1), **TOL)
    torch.testing.assert_close(dense(m)[2], C, **TOL)
    m2 = make(True, l_max=128)
    m2.load_state_dict(m.state_dict())
    assert int(m2.l_max) == 128
    torch.testing.assert_close(m2.kernel(100, torch.float64), m.kernel(100, torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("L", [1, 17, 100])
def test_woodbury_spectrum_equals_resolvent(L):
    """rfft(K) == C (I - Ā^L) (I - ω Ā)^{-1} B̄ at the roots of unity (dense resolvent)."""
    m = make(True, seed=1, l_max=L)  # the kernel at exactly l_max, where C (I - Ā^L) = C̃
    Abar, Bbar, C = dense(m)
    I = torch.eye(Abar.shape[-1], dtype=Abar.dtype)
    Ct = (C[0][:, None, :] @ (I - torch.linalg.matrix_power(Abar, L))).squeeze(1)  # [H, N]
    ref = []
    for w in roots_of_unity(L, torch.complex128):
        ref.append((Ct[:, None, :] @ torch.linalg.solve(I - w * Abar, Bbar[..., None])).squeeze(-1).squeeze(-1))
    khat = torch.fft.rfft(m.kernel(L, torch.float64)[0], n=L)
    torch.testing.assert_close(khat, torch.stack(ref, -1), **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 17, 130, 489])
def test_fft_path_equals_unrolled_recurrence(causal, L):
    m = make(causal, channel_chunk=2)  # H = 3: two checkpointed channel blocks
    x = torch.randn(2, L, H, dtype=torch.float64, requires_grad=True)
    y, y_ref = m(x), naive(m, x)
    torch.testing.assert_close(y, y_ref, **TOL)
    w = torch.randn_like(y)
    params = [m.log_A_real, m.A_imag, m.P, m.B, m.C, m.D, m.log_dt]
    g = torch.autograd.grad((y * w).sum(), [x] + params)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x] + params)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL)


def test_step_split_and_state_equal_recurrence():
    m = make(True, chunk_size=4)
    x = torch.randn(2, 23, H, dtype=torch.float64)
    y = naive(m, x)
    s = m.init_state(2)
    ys = []
    for t in range(x.shape[1]):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    y1, s1 = m(x[:, :10], return_state=True)
    y2, s2 = m(x[:, 10:], state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    torch.testing.assert_close(s2["x"], s["x"], **TOL)
    with torch.no_grad():  # the cached output matrix follows in-place parameter updates
        m.C.mul_(1.5)
        y = naive(m, x[:, :3])
        s = m.init_state(2)
        for t in range(3):
            y_t, s = m.step(x[:, t], s)
        torch.testing.assert_close(y_t, y[:, 2], **TOL)
        m.C.mul_(2.0)  # the state does not depend on C: the next output uses the new C
        y_t, _ = m.step(x[:, 3], s)
        torch.testing.assert_close(y_t, naive(m, x[:, :4])[:, 3], **TOL)


def test_hippo_init():
    m = longseq.mixers.build("s4", 4, causal=True, d_state=16)
    torch.testing.assert_close(-m.log_A_real.exp(), torch.full((4, 8), -0.5))
    dt = m.log_dt.exp()
    assert (dt >= 1e-3 - 1e-9).all() and (dt <= 1e-1 + 1e-9).all()


def test_ssm_params_have_own_group():
    m = longseq.mixers.build("s4", 8, causal=False, d_state=8, ssm_lr=5e-4)
    groups = param_groups(m, lr=1e-2, weight_decay=0.1)
    ssm = [g for g in groups if set(g["names"]) == {"log_A_real", "A_imag", "P", "B", "log_dt"}]
    assert len(ssm) == 1 and ssm[0]["lr"] == 5e-4 and ssm[0]["weight_decay"] == 0.0
    assert {"C", "D", "out.weight"} <= {n for g in groups if g is not ssm[0] for n in g["names"]}


@pytest.mark.parametrize("log_dt,causal", [(math.log(1e-3), True), (math.log(1e-1), False)])
def test_no_nan_at_64k_float32(log_dt, causal):
    torch.manual_seed(0)
    m = longseq.mixers.build("s4", 4, causal=causal, d_state=16)
    with torch.no_grad():
        m.log_dt.fill_(log_dt)
    x = (torch.randn(1, 65536, 4) * 100).requires_grad_(True)
    y = m(x)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_bf16_forward_runs():
    m = longseq.mixers.build("s4", 8, causal=True, d_state=8).to(torch.bfloat16)
    y = m(torch.randn(2, 33, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


@pytest.mark.parametrize(
    "opts,match",
    [
        ({"d_state": 7}, "d_state"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"l_max": 0}, "l_max"),
        ({"channel_chunk": 0}, "channel_chunk"),
    ],
)
def test_bad_options(opts, match):
    with pytest.raises(ValueError, match=match):
        longseq.mixers.build("s4", 8, causal=True, **opts)


@pytest.mark.parametrize("causal", [True, False])
def test_pointwise_block_equals_reference(causal, monkeypatch):
    """S4 block with the position-wise part (chunked GELU -> linear, own backward) against
    ``linear(gelu(naive SSM))``: values and gradients of the input and every parameter."""
    monkeypatch.setattr(s4_module, "POINTWISE_ROWS", 10)  # 2 x 37 rows: 8 chunks, the last partial
    torch.manual_seed(3)
    m = longseq.mixers.build("s4", H, causal=causal, d_state=8, pointwise=True, channel_chunk=2).double()
    x = torch.randn(2, 37, H, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref = m.out(torch.nn.functional.gelu(naive(m, x)))
    torch.testing.assert_close(y, y_ref, **TOL)
    w = torch.randn_like(y)
    params = [x] + list(m.parameters())
    for a, b in zip(torch.autograd.grad((y * w).sum(), params), torch.autograd.grad((y_ref * w).sum(), params)):
        torch.testing.assert_close(a, b, **TOL)
