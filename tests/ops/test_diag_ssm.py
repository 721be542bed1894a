"""The chunked fast paths (longseq.ops.diag_ssm) against their naive twins (longseq.ops.diag_ssm.naive: the
recurrences unrolled), in float64
(values and gradients of inputs, parameters and states; rtol 1e-9 / atol 1e-10), at odd lengths
and chunk sizes; the mixers' ``method="chunked"`` against their ``method="fft"``; the s4d/dss
recomputing GELU -> linear -> GLU against autograd."""

import pytest
import torch

import longseq
from longseq.ops.diag_ssm import diag_ssm_chunked, diag_ssm_naive, fir_conv, fir_conv_naive
from longseq.ops.diag_ssm.chunk import _FIR, _DiagChunked
from longseq.ssm.kernels import DiagSSMKernel

TOL = dict(rtol=1e-9, atol=1e-10)


def rand_modes(H, N, seed):
    g = torch.Generator().manual_seed(seed)
    log_z = torch.complex(
        -0.3 * torch.rand(H, N, generator=g, dtype=torch.float64) - 0.01,
        torch.randn(H, N, generator=g, dtype=torch.float64),
    )
    return torch.randn(H, N, generator=g, dtype=torch.complex128), log_z


def check_grads(out, ref, inputs):
    g = [torch.randn_like(o) if not o.is_complex() else torch.randn_like(o) for o in out]

    def loss(ys):
        return sum((y * gy).real.sum() if not y.is_complex() else (y.conj() * gy).real.sum() for y, gy in zip(ys, g))

    for a, b in zip(torch.autograd.grad(loss(out), inputs), torch.autograd.grad(loss(ref), inputs)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("L,chunk", [(1, 128), (17, 4), (17, 128), (489, 64), (1047, 128), (63, 7)])
def test_causal_with_state_matches_recurrence(L, chunk):
    w, log_z = rand_modes(3, 4, L)
    D = torch.randn(3, dtype=torch.float64)
    u = torch.randn(2, 3, L, dtype=torch.float64)
    for state in (None, torch.randn(2, 3, 4, dtype=torch.complex128)):
        inputs = [t.clone().requires_grad_() for t in (u, w, log_z, D)] + (
            [] if state is None else [state.clone().requires_grad_()]
        )
        s0 = None if state is None else inputs[4]
        y, x = diag_ssm_chunked(inputs[0], *inputs[1:3], D=inputs[3], state=s0, return_state=True, chunk=chunk)
        y_ref, x_ref = diag_ssm_naive(inputs[0], *inputs[1:3], D=inputs[3], state=s0)
        torch.testing.assert_close(y, y_ref, **TOL)
        torch.testing.assert_close(x, x_ref, **TOL)
        check_grads([y, x], [y_ref, x_ref], inputs)


@pytest.mark.parametrize("L,chunk", [(1, 128), (17, 5), (489, 128), (1047, 64)])
def test_bidirectional_matches_two_recurrences(L, chunk):
    w, log_z = rand_modes(3, 4, L + 1)
    w_back = torch.randn(3, 4, dtype=torch.complex128)
    D = torch.randn(3, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (torch.randn(2, 3, L, dtype=torch.float64), w, log_z, w_back, D)]
    u, w, log_z, w_back, D = inputs
    y, _ = diag_ssm_chunked(u, w, log_z, w_back=w_back, D=D, chunk=chunk)
    y_ref, _ = diag_ssm_naive(u, w, log_z, w_back=w_back, D=D)
    torch.testing.assert_close(y, y_ref, **TOL)
    check_grads([y], [y_ref], inputs)
    with pytest.raises(ValueError, match="causal"):
        diag_ssm_chunked(u, w, log_z, w_back=w_back, return_state=True)


def test_split_forward_with_state_equals_one_forward():
    w, log_z = rand_modes(4, 6, 0)
    u = torch.randn(2, 4, 301, dtype=torch.float64)
    y, x = diag_ssm_chunked(u, w, log_z, return_state=True, chunk=32)
    y1, s = diag_ssm_chunked(u[..., :77], w, log_z, return_state=True, chunk=32)
    y2, s = diag_ssm_chunked(u[..., 77:], w, log_z, state=s, return_state=True, chunk=32)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y, **TOL)
    torch.testing.assert_close(s, x, **TOL)


def test_leading_batch_dims_and_strided_input():
    w, log_z = rand_modes(3, 4, 1)
    u = torch.randn(2, 5, 40, 3, dtype=torch.float64).transpose(-1, -2)  # [2, 5, H, L], strided
    y, _ = diag_ssm_chunked(u, w, log_z, chunk=16)
    torch.testing.assert_close(y, diag_ssm_naive(u, w, log_z)[0], **TOL)


@pytest.mark.parametrize("dt", [1e-3, 1e-1])
def test_no_overflow_at_64k_float32(dt):
    ker = DiagSSMKernel(2, 64, channels=2, init="lin", dt_min=dt, dt_max=dt)
    w, log_z = ker.modes()
    u = torch.randn(1, 2, 65536)
    y, x = diag_ssm_chunked(u, w[0], log_z, return_state=True)
    yb, _ = diag_ssm_chunked(u, w[0], log_z, w_back=w[1])
    assert torch.isfinite(y).all() and torch.isfinite(x).all() and torch.isfinite(yb).all()


@pytest.mark.parametrize("L", [1, 17, 489])
@pytest.mark.parametrize("n", [1, 5, 64])
def test_fir_conv_matches_direct_sum(L, n):
    for with_prev in (False, True):
        inputs = [
            torch.randn(2, 3, L, dtype=torch.float64, requires_grad=True),
            torch.randn(3, n, dtype=torch.float64, requires_grad=True),
        ]
        if with_prev:
            inputs.append(torch.randn(2, 3, n - 1, dtype=torch.float64, requires_grad=True))
        prev = inputs[2] if with_prev else None
        y, y_ref = fir_conv(inputs[0], inputs[1], prev), fir_conv_naive(inputs[0], inputs[1], prev)
        torch.testing.assert_close(y, y_ref, **TOL)
        check_grads([y], [y_ref], inputs)


@pytest.mark.parametrize(
    "name,causal,opts",
    [
        ("s4d", False, {}),
        ("s4d", True, {"disc": "bilinear"}),
        ("dss", False, {}),
        ("dss", True, {}),
        ("h3", True, {"head_dim": 3}),
    ],
)
@pytest.mark.parametrize("L", [1, 150])
def test_mixer_chunked_equals_fft(name, causal, opts, L):
    torch.manual_seed(0)
    ms = [
        longseq.mixers.build(name, 12, causal=causal, d_state=6, method=m, **opts).double() for m in ("chunked", "fft")
    ]
    with torch.no_grad():
        for p in ms[0].kernel.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ms[1].load_state_dict(ms[0].state_dict())
    x = torch.randn(2, L, 12, dtype=torch.float64, requires_grad=True)
    ys = [m(x) for m in ms]
    torch.testing.assert_close(ys[0], ys[1], **TOL)
    g = torch.randn_like(ys[0])
    grads = [torch.autograd.grad((y * g).sum(), [x] + list(m.parameters())) for y, m in zip(ys, ms)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)
    with pytest.raises(ValueError, match="method"):
        longseq.mixers.build(name, 12, causal=causal, method="scan")


@pytest.mark.parametrize("J", [1, 2, 3, 7, 16, 17, 63, 64, 255, 300])
@pytest.mark.parametrize("with_start", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_carry_recurrence_equals_loop(J, with_start, reverse):
    """The chunk-state carry X_j = a X_{j-1} + S_j (two-level, in place: inside blocks of ~sqrt(J)
    chunks, over the blocks, then the remainder), forwards and backwards in j, on a strided slice of
    the channels (as the bidirectional mode runs it), against a plain loop (complex128, 1e-12)."""
    from longseq.ops.diag_ssm.chunk import _scan_

    S = torch.randn(3, 2, J, 4, dtype=torch.complex128)
    a = torch.randn(3, 4, dtype=torch.complex128) * 0.6
    X0 = torch.randn(3, 2, 4, dtype=torch.complex128) if with_start else None
    x, ref = torch.zeros(3, 2, 4, dtype=torch.complex128) if X0 is None else X0, [None] * J
    for j in reversed(range(J)) if reverse else range(J):
        x = a[:, None] * x + S[:, :, j]
        ref[j] = x
    buf = torch.zeros(3, 2, J, 7, dtype=torch.complex128)
    X = buf[..., 2:6]  # not contiguous
    X.copy_(S)
    if X0 is not None:
        X[:, :, -1 if reverse else 0] += a[:, None] * X0
    out = _scan_(X, a, reverse=reverse)
    assert out.data_ptr() == X.data_ptr()
    torch.testing.assert_close(X, torch.stack(ref, 2), rtol=1e-12, atol=1e-12)
    assert not buf[..., :2].abs().any() and not buf[..., 6:].abs().any()


# ---------------------------------------------------------------------------- retained graph, bf16
from .twins import bf16_smoke, check_twin  # noqa: E402


@pytest.mark.parametrize("L,chunk,bidirectional", [(1, 4, False), (37, 8, False), (37, 8, True), (130, 64, True)])
def test_diag_ssm_chunked_twin(L, chunk, bidirectional):
    """Values, all gradients (input, modes, ``w'``, ``D``, state) and a second backward through a
    retained graph; rtol 1e-9 / atol 1e-10."""
    w, log_z = rand_modes(3, 4, L)
    inputs = [torch.randn(2, 3, L, dtype=torch.float64), w, log_z, torch.randn(3, dtype=torch.float64)]
    if bidirectional:
        inputs.append(torch.randn(3, 4, dtype=torch.complex128))
        fast = lambda u, w, lz, D, wb: diag_ssm_chunked(u, w, lz, w_back=wb, D=D, chunk=chunk)[0]  # noqa: E731
        naive = lambda u, w, lz, D, wb: diag_ssm_naive(u, w, lz, w_back=wb, D=D)[0]  # noqa: E731
    else:
        inputs.append(torch.randn(2, 3, 4, dtype=torch.complex128))
        fast = lambda u, w, lz, D, x0: diag_ssm_chunked(u, w, lz, D=D, state=x0, return_state=True, chunk=chunk)  # noqa: E731
        naive = lambda u, w, lz, D, x0: diag_ssm_naive(u, w, lz, D=D, state=x0)  # noqa: E731
    check_twin(fast, naive, inputs, **TOL, functions=(_DiagChunked,))


@pytest.mark.parametrize("L,n,with_prev", [(1, 1, False), (17, 5, True), (130, 64, True)])
def test_fir_conv_twin(L, n, with_prev):
    inputs = [torch.randn(2, 3, L, dtype=torch.float64), torch.randn(3, n, dtype=torch.float64)]
    if with_prev:
        inputs.append(torch.randn(2, 3, n - 1, dtype=torch.float64))
    check_twin(fir_conv, fir_conv_naive, inputs, **TOL, functions=(_FIR,))


def test_bf16_smoke():
    """bfloat16 input: the chunked SSM computes in the modes' dtype and casts back; the FIR runs in bfloat16."""
    w, log_z = rand_modes(3, 4, 0)
    u, D = torch.randn(2, 3, 37), torch.randn(3)
    assert (
        bf16_smoke(
            lambda u, w, lz, D: diag_ssm_chunked(u, w.to(torch.complex64), lz.to(torch.complex64), D=D)[0],
            [u, w, log_z, D],
        )
        == "runs"
    )
    assert bf16_smoke(fir_conv, [u, torch.randn(3, 5)]) == "runs"
