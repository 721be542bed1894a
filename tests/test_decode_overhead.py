"""Decode-path caches (issue 25): cached discretisation == recomputed, invalidated by any change of
the parameters, never used when gradients flow; no-grad step == grad-mode step bit for bit."""

import pytest
import torch

from longseq.models import CausalLM
from longseq.ops.diag_ssm.recurrent import diag_step
from longseq.ssm.kernels import DiagSSMKernel


def _fresh(kernel):
    with torch.enable_grad():
        w, log_z = kernel.modes()
    return w.detach(), log_z.detach()


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_modes_cache_matches_and_invalidates(disc):
    torch.manual_seed(0)
    k = DiagSSMKernel(6, 8, disc=disc).double()
    with torch.no_grad():
        w1, z1 = k.modes()
        w2, z2 = k.modes()
        assert w1 is w2 and z1 is z2  # reused
        fw, fz = _fresh(k)
        assert torch.equal(w1, fw) and torch.equal(z1, fz)
        k.log_dt.add_(0.1)  # an in-place update (an optimiser step) must invalidate
        w3, z3 = k.modes()
        fw, fz = _fresh(k)
        assert not torch.equal(z3, z1)
        assert torch.equal(w3, fw) and torch.equal(z3, fz)
        k.load_state_dict({n: torch.randn_like(p) for n, p in k.state_dict().items()})
        w4, z4 = k.modes()
        fw, fz = _fresh(k)
        assert torch.equal(w4, fw) and torch.equal(z4, fz)
    k.float()  # new storage and dtype
    with torch.no_grad():
        w5, z5 = k.modes()
    assert w5.dtype == torch.complex64
    fw, fz = _fresh(k)
    assert torch.equal(w5, fw) and torch.equal(z5, fz)


def test_modes_not_cached_with_grad():
    k = DiagSSMKernel(4, 8).double()
    w, log_z = k.modes()
    assert w.requires_grad and log_z.requires_grad
    (w.real.sum() + log_z.real.sum()).backward()
    assert k.log_dt.grad is not None and k.log_dt.grad.abs().sum() > 0


def test_diag_step_exp_cache_against_formula():
    torch.manual_seed(1)
    H, N = 3, 5
    log_z = torch.complex(-torch.rand(H, N, dtype=torch.float64), torch.randn(H, N, dtype=torch.float64))
    w = torch.randn(H, N, dtype=torch.complex128)
    x = torch.randn(2, H, N, dtype=torch.complex128)
    u = torch.randn(2, H, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(2):  # second call uses the cached exp
            y, x_new = diag_step(u, w, log_z, x)
            ref_x = torch.exp(log_z) * x + u[..., None]  # x_l = z x_{l-1} + u_l
            torch.testing.assert_close(x_new, ref_x, rtol=0, atol=0)
            torch.testing.assert_close(y, (w * ref_x).real.sum(-1), rtol=0, atol=0)
        log_z.real.sub_(0.5)  # in place: the cached exp must not be reused
        y, x_new = diag_step(u, w, log_z, x)
        torch.testing.assert_close(x_new, torch.exp(log_z) * x + u[..., None], rtol=0, atol=0)


@pytest.mark.parametrize("mixer", ["s4d", "h3", "linear", "s5", "performer", "local", "softmax"])
def test_no_grad_step_equals_grad_step(mixer):
    """The decode caches change no number: steps under no_grad == steps with autograd on, float64."""
    torch.manual_seed(2)
    m = CausalLM(30, 32, 2, mixer=mixer, num_heads=2).double().eval()
    ids = torch.randint(0, 30, (2, 9))
    with torch.no_grad():
        _, s1 = m(ids, return_state=True)
    _, s2 = m(ids, return_state=True)
    for t in range(4):
        tok = torch.full((2,), t + 3)
        with torch.no_grad():
            a, s1 = m.step(tok, s1)
        b, s2 = m.step(tok, s2)
        torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("head_dim", [1, 4, None])
@pytest.mark.parametrize("disc", ["bilinear", "zoh"])
def test_h3_step_equals_forward(head_dim, disc):
    """h3's dedicated ``_step`` (row layout) == the whole-sequence forward, token by token, float64,
    with and without autograd; multi-head ``head_dim`` > 1 included (the conformance suite uses 1)."""
    import longseq

    torch.manual_seed(3)
    m = longseq.mixers.build("h3", 16, num_heads=2, causal=True, head_dim=head_dim, d_state=8, disc=disc).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    ref = m(x)  # [B, L, d]
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            state = m.init_state(2)
            out = []
            for t in range(x.shape[1]):
                y, state = m.step(x[:, t], state)
                out.append(y)
        torch.testing.assert_close(torch.stack(out, 1), ref.detach() if not grad else ref, rtol=1e-10, atol=1e-10)
