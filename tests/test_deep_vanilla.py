"""Deep vanilla transformers (He et al. 2023): E-SPA / U-SPA / shaped attention, shortcuts=False.

Tolerances: float64 comparisons against naive dense references at atol 1e-8 (attention matrix at
init) and rtol 1e-7 / atol 1e-9 (outputs and gradients); the 24-layer kernel test compares the
measured token-cosine matrix (width 96, 40 positions, 4 sequences) with the infinite-width prediction to 0.1
(measured deviation ~0.02-0.05), and separates SPA (smallest off-diagonal cosine < 0.98) from
standard init (> 0.999, rank collapse).
"""

import math

import pytest
import torch

import longseq
from longseq.models import CausalLM
from longseq.models.backbone import Backbone
from longseq.nn import deep_vanilla as dv

F64 = dict(rtol=1e-7, atol=1e-9)


@pytest.fixture(autouse=True)
def _one_thread():
    """The 24-layer stacks are small matmuls: extra threads only add contention on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- naive references
def naive_kernel(kind, n, layer, n_layers, final):
    """Sigma_l written out from the schedule: 1 - e^{-2 gamma_l} (E-SPA) / 1 - rho_l (U-SPA)
    equals (its value at L)^(l / L)."""
    if layer == 0:
        return torch.eye(n, dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    if kind == "espa":
        gamma = -0.5 * math.log(1 - (1 - math.exp(-2 * final)) ** (layer / n_layers))
        return torch.exp(-gamma * (i[:, None] - i[None, :]).abs())
    rho = 1 - (1 - final) ** (layer / n_layers)
    return torch.full((n, n), rho, dtype=torch.float64) + (1 - rho) * torch.eye(n, dtype=torch.float64)


def naive_spa(kind, n, layer, n_layers, final):
    """A_l = L_l L_{l-1}^{-1} with an explicit inverse."""
    chol = torch.linalg.cholesky
    return chol(naive_kernel(kind, n, layer, n_layers, final)) @ torch.linalg.inv(
        chol(naive_kernel(kind, n, layer - 1, n_layers, final))
    )


def heads(m, t):
    B, L, _ = t.shape
    return t.view(B, L, m.num_heads, m.head_dim).transpose(1, 2)  # [B, H, L, Dh]


def naive_forward(m, x, A_init=None):
    """Dense reference from the mixer's weights: SPA ``diag(D) softmax(QK^T/sqrt(d) + log(A/D))``
    (``A`` = the naive A_l) or shaped ``alpha I + beta softmax - gamma C``, then ``@ V``, out."""
    B, L, _ = x.shape
    q, k, v = heads(m, m.q(x)), heads(m, m.k(x)), heads(m, m.v(x))
    scores = q @ k.transpose(-1, -2) / math.sqrt(m.head_dim)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    if A_init is None:  # shaped
        soft = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        C = causal.to(x.dtype) / torch.arange(1, L + 1, dtype=x.dtype)[:, None]
        h = (slice(None), None, None)
        A = m.alpha[h] * torch.eye(L, dtype=x.dtype) + m.beta[h] * soft - m.gamma[h] * C
    else:
        D = A_init.sum(-1)
        bias = torch.where(causal, (A_init / D[:, None]).log(), torch.zeros_like(A_init))
        A = D[:, None] * (scores + bias).masked_fill(~causal, float("-inf")).softmax(-1)
    o = (A @ v).transpose(1, 2).reshape(B, L, -1)
    return m.out(o)


def build(init, layer_index=3, n_layers=8, max_len=128, d=24, h=2, **kw):
    return longseq.mixers.build(
        "espa",
        d,
        num_heads=h,
        causal=True,
        init=init,
        layer_index=layer_index,
        n_layers=n_layers,
        max_len=max_len,
        **kw,
    ).double()


# ----------------------------------------------------------------------------- SPA init
@pytest.mark.parametrize("kind,final", [("espa", 0.005), ("espa", 0.3), ("uspa", 0.8), ("uspa", 0.5)])
@pytest.mark.parametrize("layer", [1, 5, 12])
def test_attention_at_init_is_LL_inverse(kind, final, layer):
    key = "gamma_final" if kind == "espa" else "rho_final"
    m = build(kind, layer_index=layer - 1, n_layers=12, max_len=96, **{key: final})
    n = 65  # a prefix of max_len: B_l[:n, :n] must be exact
    x = torch.randn(2, n, 24, dtype=torch.float64)
    A = m.attention_weights(x)  # [B, H, n, n]
    A_ref = naive_spa(kind, n, layer, 12, final)
    assert (A_ref[torch.ones(n, n, dtype=torch.bool).tril()] > 0).all()
    torch.testing.assert_close(A, A_ref.expand_as(A), rtol=0, atol=1e-8)
    # the kernel map hits the target: A Sigma_{l-1} A^T = Sigma_l
    torch.testing.assert_close(
        A_ref @ naive_kernel(kind, n, layer - 1, 12, final) @ A_ref.T,
        naive_kernel(kind, n, layer, 12, final),
        rtol=0,
        atol=1e-10,
    )


@pytest.mark.parametrize("init", ["espa", "uspa", "shaped"])
@pytest.mark.parametrize("L", [1, 37, 96])
def test_forward_matches_naive_values_and_gradients(init, L):
    m = build(init, max_len=96, d=24, h=2)
    with torch.no_grad():  # move off the init so Q K^T matters
        m.q.weight.normal_(std=0.5)
        if init == "shaped":
            for p in (m.alpha, m.beta, m.gamma):
                p.uniform_(0.5, 1.5)
    A_init = None if init == "shaped" else naive_spa(init, L, 4, 8, 0.005 if init == "espa" else 0.8)
    x = torch.randn(2, L, 24, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref = naive_forward(m, x, A_init)
    torch.testing.assert_close(y, y_ref, **F64)
    g = torch.randn_like(y)
    params = [p for p in m.parameters()]
    grads = torch.autograd.grad((y * g).sum(), [x, *params])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, *params])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, **F64)


def test_shaped_is_identity_at_init():
    m = build("shaped", d=24, h=3)
    x = torch.randn(2, 50, 24, dtype=torch.float64)
    A = m.attention_weights(x)
    torch.testing.assert_close(A, torch.eye(50, dtype=torch.float64).expand_as(A), rtol=0, atol=1e-12)
    # W_V W_O orthogonal (initialised in float32): the layer is an orthogonal map of each token at init
    torch.testing.assert_close(m(x).norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("init", ["uspa", "shaped"])
def test_kv_cache_continues_the_sequence(init):
    m = build(init, max_len=64)
    with torch.no_grad():
        m.q.weight.normal_(std=0.5)
    x = torch.randn(2, 40, 24, dtype=torch.float64)
    y = m(x)
    y1, s = m(x[:, :13], return_state=True)
    ys = [y1]
    for t in range(13, 40):
        y_t, s = m.step(x[:, t], s)
        ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, 1), y, **F64)


def test_max_len_and_option_errors():
    m = build("espa", max_len=16).float()
    m(torch.randn(1, 16, 24))
    with pytest.raises(ValueError, match="max_len"):
        m(torch.randn(1, 17, 24))
    s = m.init_state(1)
    _, s = m(torch.randn(1, 16, 24), state=s, return_state=True)
    with pytest.raises(ValueError, match="max_len"):
        m.step(torch.randn(1, 24), s)
    with pytest.raises(ValueError, match="init"):
        build("cholesky")
    with pytest.raises(ValueError, match="layer_index"):
        build("espa", layer_index=8, n_layers=8)
    with pytest.raises(ValueError, match="rho_L"):
        build("uspa", rho_final=1.5)
    with pytest.raises(ValueError, match="bidirectional"):
        longseq.mixers.build("espa", 24, causal=False)


def test_tat_slope_hits_the_c_map_target():
    for n in (16, 24, 48):
        s = dv.tat_slope(n)
        c = 0.0
        for _ in range(n):
            c = dv.lrelu_cmap(c, s)
        assert 0 < s < 1 and abs(c - dv.TAT_ETA) < 1e-9
    assert dv.tat_slope(12) == 0.0  # 12 ReLU C-maps reach only 0.897 < 0.9: ReLU


# ----------------------------------------------------------------------------- the 24-layer stack
def predicted_cosines(kind, n, n_layers):
    """Infinite-width token-cosine matrix of the vanilla stack: attention K -> A K A^T (orthogonal
    value/output weights), then the TAT leaky-ReLU C-map per entry (its q-map is the identity)."""
    s = dv.tat_slope(n_layers)
    K = torch.eye(n, dtype=torch.float64)
    for layer in range(1, n_layers + 1):
        A = naive_spa(kind, n, layer, n_layers, dv.DEFAULT_FINAL[kind])
        K = A @ K @ A.T
        q = K.diagonal().sqrt()
        C = (K / torch.outer(q, q)).clamp(-1, 1).apply_(lambda c: dv.lrelu_cmap(c, s))
        K = C * torch.outer(q, q)
    q = K.diagonal().sqrt()
    return K / torch.outer(q, q)


def measured_cosines(mixer, options, n_layers=24, d=96, n=40, batch=4):
    torch.manual_seed(0)
    bb = Backbone(
        8, d, n_layers, mixer=mixer, mixer_options=options, num_heads=4, norm="none", ffn="tat", shortcuts=False
    )
    x = torch.randn(batch, n, d)  # i.i.d. tokens: input kernel ~ I
    with torch.no_grad():
        for block in bb.blocks:
            x = block(x)
    G = (x @ x.transpose(1, 2)).mean(0).double()  # [n, n], averaged over the batch
    q = G.diagonal().sqrt()
    return G / torch.outer(q, q)


def test_24_layer_vanilla_kernel_spa_vs_standard_init():
    n = 40
    off = ~torch.eye(n, dtype=torch.bool)
    for kind in ("espa", "uspa"):
        K = measured_cosines("espa", {"init": kind, "max_len": n}, n=n)
        P = predicted_cosines(kind, n, 24)
        assert (K - P).abs().max() < 0.1, kind  # follows the designed kernel
        assert K[off].min() < 0.98, kind  # no rank collapse
        assert torch.linalg.eigvalsh(K)[0] > 1e-5, kind
    K = measured_cosines("espa", {"init": "shaped", "max_len": n}, n=n)
    assert K[off].min() < 0.98
    K = measured_cosines("softmax", None, n=n)  # standard init, same vanilla stack
    assert K[off].min() > 0.999  # rank collapse: all tokens alike


def test_deep_vanilla_lm_gradients_finite():
    torch.manual_seed(0)
    m = CausalLM(
        40, 32, 24, mixer="espa", mixer_options={"max_len": 32}, num_heads=2, norm="none", ffn="tat", shortcuts=False
    )
    assert [b.mixer.layer_index for b in m.backbone.blocks] == list(range(24))
    assert all(b.mixer.n_layers == 24 for b in m.backbone.blocks)
    ids = torch.randint(0, 40, (3, 32))
    loss = m.loss(m(ids[:, :-1]), ids[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_shortcuts_false_removes_residuals():
    torch.manual_seed(0)
    bb = Backbone(8, 16, 1, mixer="softmax", norm="none", ffn="none", shortcuts=False)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(bb.blocks[0](x), bb.blocks[0].mixer(x))
    bb = Backbone(8, 16, 1, mixer="softmax", norm="none", ffn="none")
    torch.testing.assert_close(bb.blocks[0](x), x + bb.blocks[0].mixer(x))
