"""gss against its equations written plainly (float64): the simplified DSS kernel against its
closed form, the whole mixer against the recurrence unrolled token by token (values and gradients
of the input and every parameter, rtol 1e-8 / atol 1e-10), split forward with a carried state and
``step`` against one forward; the ``variant="dss"`` option against the per-channel DSS recurrence."""

import pytest
import torch
import torch.nn.functional as F

import longseq
import longseq.ops.fftconv.fft as fftconv
import longseq.ops.gss_gate.fused as gss_gate
from longseq.ops.vandermonde.chunk import vandermonde, vandermonde_transposed
from longseq.optim import param_groups
from reference import assert_matches_reference

TOL = dict(rtol=1e-8, atol=1e-10)


def naive_kernel(m, L):
    """K[c, h, l] = Re Σ_n C[c, h, n] (e^{Λ_n} - 1) / Λ_n e^{Λ_n l}, materialised [C, H, N, L]."""
    lam = torch.complex(-torch.exp(m.kernel.Lambda_re), torch.exp(m.kernel.Lambda_im))  # [N]
    C = torch.complex(m.kernel.C[..., 0], m.kernel.C[..., 1])  # [C, H, N]
    l = torch.arange(L, dtype=lam.real.dtype)
    return ((C * (torch.exp(lam) - 1) / lam)[..., None] * torch.exp(lam[:, None] * l)).sum(-2).real


def naive_shared_ssm(m, u):
    """u [B, H, L]: x_l = e^Λ x_{l-1} + u_l, y_l = Re Σ_n w_n x_l (+ the same over the strict
    future with the second C when bidirectional) + D u."""
    lam = torch.complex(-torch.exp(m.kernel.Lambda_re), torch.exp(m.kernel.Lambda_im))
    C = torch.complex(m.kernel.C[..., 0], m.kernel.C[..., 1])
    w = C * (torch.exp(lam) - 1) / lam  # [C, H, N]

    def run(wc, seq):
        x = torch.zeros(*seq.shape[:2], lam.shape[0], dtype=lam.dtype)
        ys = []
        for l in range(seq.shape[-1]):
            x = torch.exp(lam) * x + seq[..., l, None]
            ys.append((wc * x).sum(-1).real)
        return torch.stack(ys, -1)

    y = run(w[0], u)
    if not m.causal:
        y = y + F.pad(run(w[1], u.flip(-1)), (1, 0))[..., : u.shape[-1]].flip(-1)
    return y + m.D[:, None] * u


def naive_dss_exp(m, u):
    """The ``variant="dss"`` option: per-channel Λ and learned Δ (DSS_exp), same recurrence."""
    k = m.kernel
    lam = torch.complex(-torch.exp(k.Lambda_re), k.Lambda_im)
    dt = torch.exp(k.log_dt)[:, None]
    W = torch.view_as_complex(k.W)
    dA, dB = torch.exp(lam * dt), (torch.exp(lam * dt) - 1) / lam

    def run(Wc, seq):
        x = torch.zeros(u.shape[0], *lam.shape, dtype=lam.dtype)
        ys = []
        for l in range(seq.shape[-1]):
            x = dA * x + dB * seq[..., l, None]
            ys.append((Wc * x).sum(-1).real)
        return torch.stack(ys, -1)

    y = run(W[0], u)
    if not m.causal:
        y = y + F.pad(run(W[1], u.flip(-1)), (1, 0))[..., : u.shape[-1]].flip(-1)
    return y + m.D[:, None] * u


def naive_gss(m, x):
    v = F.gelu(m.v_proj(x))
    u = F.gelu(m.u_proj(x))
    ssm = naive_dss_exp if hasattr(m.kernel, "log_dt") else naive_shared_ssm
    y = ssm(m, u.transpose(1, 2)).transpose(1, 2)
    return m.out(m.c_proj(y) * v)


def build(causal, kernel="gss", **kw):
    torch.manual_seed(5)
    m = longseq.mixers.build("gss", 12, causal=causal, d_state=5, expand=2, d_ssm=4, variant=kernel, **kw).double()
    with torch.no_grad():
        for p in m.kernel.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.fixture
def small_chunks(monkeypatch):
    """Several row chunks in the gated branch and several channel groups in the FFT convolution."""
    monkeypatch.setattr(gss_gate, "_chunk_rows", lambda F_dim: 7)
    monkeypatch.setattr(fftconv, "_channel_group", lambda batch, n: 3)


@pytest.mark.parametrize("long_memory", [False, True])
@pytest.mark.parametrize("L", [1, 17, 489, 1047])
def test_shared_kernel_equals_closed_form(L, long_memory):
    """Also with modes of very different decay, so chunks past the first keep only some modes."""
    m = build(causal=False)
    if long_memory:
        with torch.no_grad():
            m.kernel.Lambda_re.copy_(torch.tensor([-9.0, -4.0, 0.5, -6.5, -2.0]))
    w, log_z = m.kernel.modes()
    k = vandermonde(w, log_z, L)
    k_ref = naive_kernel(m, L)
    torch.testing.assert_close(k, k_ref, **TOL)
    g = torch.randn_like(k)
    params = list(m.kernel.parameters())
    for a, b, n in zip(
        torch.autograd.grad((k * g).sum(), params),
        torch.autograd.grad((k_ref * g).sum(), params),
        ["Lambda_re", "Lambda_im", "C"],
    ):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=n)


def test_state_after_a_sequence_equals_closed_form():
    m = build(causal=True)
    _, log_z = m.kernel.modes()
    u = torch.randn(2, 4, 300, dtype=torch.float64)
    x = vandermonde_transposed(u, log_z)
    powers = torch.exp(log_z[:, None] * torch.arange(299, -1, -1, dtype=torch.float64))  # z^(L-1-l)
    torch.testing.assert_close(x, (u[..., None, :] * powers).sum(-1).to(x.dtype), **TOL)


@pytest.mark.parametrize("kernel", ["gss", "dss"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 37, 64])
def test_gss_equals_recurrence(kernel, causal, L, small_chunks):
    m = build(causal, kernel)
    x = torch.randn(2, L, 12, dtype=torch.float64)
    assert_matches_reference(m, lambda m, x, mask: naive_gss(m, x), x, None, **TOL)


@pytest.mark.parametrize("kernel", ["gss", "dss"])
def test_step_and_split_forward_equal_one_forward(kernel, small_chunks):
    m = build(True, kernel)
    x = torch.randn(2, 41, 12, dtype=torch.float64)
    y = m(x)
    s = m.init_state(2)
    ys = []
    for t in range(41):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    y1, s = m(x[:, :13], return_state=True)
    y2, s = m(x[:, 13:14], state=s, return_state=True)
    y3, s = m(x[:, 14:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y, **TOL)
    assert m.state_size(41) == 2 * 4 * 5


def test_no_grad_forward_equals_autograd_forward():
    m = build(False).float()
    x = torch.randn(2, 50, 12)
    with torch.no_grad():
        y0 = m(x)
    torch.testing.assert_close(m(x.requires_grad_()), y0)


@pytest.mark.parametrize("causal", [True, False])
def test_long_float32_finite_at_the_ends_of_the_lambda_range(causal):
    """L = 65,536 in float32 with Λ_re, Λ_im at ±4 (|Re Λ| from e^-4 to e^4, |Im Λ| up to 55)."""
    torch.manual_seed(0)
    m = longseq.mixers.build("gss", 8, causal=causal, d_state=16, expand=1, d_ssm=2)
    with torch.no_grad():
        m.kernel.Lambda_re.copy_(torch.tensor([-4.0, 4.0]).repeat(8))
        m.kernel.Lambda_im.copy_(torch.tensor([-4.0, -4.0, 4.0, 4.0]).repeat(4))
    x = torch.randn(1, 65536, 8, requires_grad=True)
    y = m(x)
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_float32_kernel_keeps_the_phase_of_long_lags():
    """Phases l Im Λ ~ 1e6 at L = 16K: the float32 kernel stays close to the float64 one."""
    torch.manual_seed(1)
    m = longseq.mixers.build("gss", 8, causal=True, d_state=16, d_ssm=2)
    with torch.no_grad():
        m.kernel.Lambda_re.fill_(-7.0)  # |z| = exp(-e^-7): slow decay, long lags matter
        m.kernel.Lambda_im.uniform_(3.0, 4.0)  # Im Λ ~ 20..55
    w, log_z = m.kernel.modes()
    k32 = vandermonde(w, log_z, 16384)
    k64 = vandermonde(w.to(torch.complex128), log_z.to(torch.complex128), 16384)
    assert (k32 - k64).abs().max() < 1e-3 * k64.abs().max()


def test_options_and_errors():
    for bad in [dict(d_ssm=0), dict(expand=0), dict(d_state=0), dict(variant="s4")]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            longseq.mixers.build("gss", 12, **bad)
    m = longseq.mixers.build("gss", 32, d_state=8)
    assert m.u_proj.out_features == 8 and m.v_proj.out_features == 128 and m.spec.has_ffn
    assert m.kernel.Lambda_re.shape == (8,) and m.kernel.C.shape == (2, 8, 8, 2)  # Λ shared by channels
    assert longseq.mixers.build("gss", 32, causal=True).kernel.C.shape == (1, 8, 512, 2)


@pytest.mark.parametrize(
    "kernel,names", [("gss", {"Lambda_re", "Lambda_im"}), ("dss", {"Lambda_re", "Lambda_im", "log_dt"})]
)
def test_ssm_parameters_get_their_own_group(kernel, names):
    m = longseq.mixers.build("gss", 16, causal=True, d_state=8, ssm_lr=5e-4, variant=kernel)
    groups = param_groups(m, lr=1e-2, weight_decay=0.05)
    ssm = [g for g in groups if g["lr"] == 5e-4]
    assert len(ssm) == 1 and ssm[0]["weight_decay"] == 0.0
    assert {n.split(".")[-1] for n in ssm[0]["names"]} == names


@pytest.mark.parametrize("causal", [True, False])
def test_bf16_forward_and_large_inputs(causal):
    m = longseq.mixers.build("gss", 16, causal=causal, d_state=8)
    x = torch.randn(1, 300, 16) * 100
    assert torch.isfinite(m(x)).all()
    assert m.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16
