"""Transformer-MGK / MLK against dense mixture scores written plainly here (float64).

MGK reference: A_ij ∝ sum_r pi_r exp(-|q_i - k_jr|^2 / (2 sqrt(d))), materialised [B, H, L, L, M],
masked, normalised. MLK reference: A_ij ∝ sum_r pi_r phi(q_i) . phi(k_jr), the M kernel matrices
summed. Values and gradients (inputs and parameters) agree to rtol=1e-9, atol=1e-10.
"""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.nn.rotary import RotaryEmbedding
from reference import assert_matches_reference

TOL = dict(rtol=1e-9, atol=1e-10)


def heads(m, x):
    B, L, D = x.shape
    H, Dh = m.num_heads, m.head_dim
    parts = m.qkv(x).split(D, dim=-1)  # q, k_1 .. k_M, v
    q, v = (t.reshape(B, L, H, Dh).transpose(1, 2) for t in (parts[0], parts[-1]))
    ks = [t.reshape(B, L, H, Dh).transpose(1, 2) for t in parts[1:-1]]
    if m.rope is not None:
        rope = RotaryEmbedding(Dh)
        q, ks = rope(q), [rope(k) for k in ks]
    return q, torch.stack(ks, -2), v  # k: [B, H, L, M, Dh]


def allowed_matrix(m, L, mask):
    allowed = torch.ones(L, L, dtype=torch.bool)
    if m.causal:
        allowed = allowed.tril()
    allowed = allowed[None, None]
    if mask is not None:
        allowed = allowed & mask[:, None, None, :]
    return allowed  # [B|1, 1, L, L]


def mgk_reference(m, x, mask=None, return_resp=False):
    B, L, D = x.shape
    q, k, v = heads(m, x)
    pi = m.prior()  # [H, M]
    dist2 = (q[:, :, :, None, None, :] - k[:, :, None, :, :, :]).square().sum(-1)  # [B, H, L, L, M]
    log_comp = pi.log()[None, :, None, None, :] - dist2 / (2 * m.head_dim**0.5)
    allowed = allowed_matrix(m, L, mask) | torch.eye(L, dtype=torch.bool)  # padded rows: see self
    log_comp = log_comp.masked_fill(~allowed[..., None], float("-inf"))
    post = torch.softmax(log_comp.flatten(-2), -1).unflatten(-1, log_comp.shape[-2:])  # over (j, r)
    A = post.sum(-1)  # [B, H, L, L]
    y = m.out((A @ v).transpose(1, 2).reshape(B, L, D))
    y = y if mask is None else y * mask[..., None]
    return (y, post.sum(-2)) if return_resp else y  # resp: [B, H, L, M]


def mlk_reference(m, x, mask=None):
    B, L, D = x.shape
    q, k, v = heads(m, x)
    pi = m.prior()
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    A = sum(pi[None, :, None, None, r] * (fq @ fk[:, :, :, r].transpose(-1, -2)) for r in range(m.num_keys))
    A = A * allowed_matrix(m, L, mask)
    o = (A @ v) / (A.sum(-1, keepdim=True) + 1e-6)
    y = m.out(o.transpose(1, 2).reshape(B, L, D))
    return y if mask is None else y * mask[..., None]


def build(name, causal, rope, d=24, h=2, **kw):
    m = longseq.mixers.build(name, d, num_heads=h, causal=causal, rope=rope, **kw).double().eval()
    if hasattr(m.prior, "logits"):
        with torch.no_grad():  # a non-uniform prior
            m.prior.logits.copy_(torch.randn_like(m.prior.logits))
    return m


def check_values_and_grads(m, ref_fn, L, masked=True):
    x = torch.randn(2, L, m.d_model, dtype=torch.float64)
    mask = (torch.arange(L)[None] < torch.tensor([L, max(1, L // 2)])[:, None]) if masked else None
    assert_matches_reference(m, ref_fn, x, mask, **TOL)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("L,masked", [(1, False), (63, True), (65, False), (65, True)])
def test_mgk_equals_dense_mixture_scores(causal, rope, L, masked):
    check_values_and_grads(build("mgk", causal, rope), mgk_reference, L, masked)


@pytest.mark.parametrize("num_keys", [1, 3])
def test_mgk_other_mixture_sizes_and_head_dim_60(num_keys):
    check_values_and_grads(build("mgk", True, False, d=120, num_keys=num_keys), mgk_reference, 40)


def test_mgk_soft_em_updates_prior_to_mean_responsibility():
    m = build("mgk", True, False, mixture="soft_em")
    with torch.no_grad():
        m.prior.pi.copy_(torch.tensor([[0.3, 0.7], [0.6, 0.4]], dtype=torch.float64))
    x = torch.randn(2, 30, 24, dtype=torch.float64)
    mask = torch.arange(30)[None] < torch.tensor([30, 17])[:, None]
    y_ref, resp = mgk_reference(m, x, mask, return_resp=True)  # E-step with the current prior
    w = mask[:, None, :, None].double()
    expected = (resp * w).sum((0, 2)) / w.sum((0, 2))
    y = m.train()(x, mask)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(m.prior.pi, expected, **TOL)
    torch.testing.assert_close(m.prior.pi.sum(-1), torch.ones(2, dtype=torch.float64), **TOL)
    pi = m.prior.pi.clone()
    m.eval()(x)
    assert torch.equal(m.prior.pi, pi), "the prior is fixed in eval mode"


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("L", [1, 63, 200])
def test_mlk_equals_dense_mixture_of_kernels(causal, rope, L):
    check_values_and_grads(build("mlk", causal, rope, chunk_size=16), mlk_reference, L)


def test_mlk_prefill_then_steps_head_dim_60():
    m = build("mlk", True, True, d=120, chunk_size=16)
    x = torch.randn(1, 50, 120, dtype=torch.float64)
    y = m(x)
    y1, s = m(x[:, :21], return_state=True)
    ys = [y1]
    for t in range(21, 50):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, 1), y, **TOL)


@pytest.mark.parametrize("name", ["mgk", "mlk"])
def test_numerical_hygiene_large_inputs_and_bf16(name):
    for causal in (True, False):
        m = longseq.mixers.build(name, 32, num_heads=2, causal=causal)
        x = (torch.randn(2, 70, 32) * 100).requires_grad_()
        y = m(x)
        y.square().mean().backward()
        assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
        yb = m.to(torch.bfloat16)(torch.randn(2, 50, 32, dtype=torch.bfloat16))
        assert yb.dtype == torch.bfloat16 and torch.isfinite(yb).all()


def test_invalid_options():
    with pytest.raises(ValueError, match="mixture"):
        longseq.mixers.build("mgk", 16, mixture="hard")
    with pytest.raises(ValueError, match="num_keys"):
        longseq.mixers.build("mgk", 16, num_keys=0)
    with pytest.raises(ValueError, match="mixture"):
        longseq.mixers.build("mlk", 16, mixture="soft_em")
    with pytest.raises(ValueError, match="recurrent"):
        longseq.mixers.build("mgk", 16, causal=True).init_state(1)
