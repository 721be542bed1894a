"""SPADE mixer against the registered ``s4``/``s4d`` and ``local`` mixers composed by hand with the
same weights (float64, values and gradients of inputs and parameters, rtol 1e-7 / atol 1e-9)."""

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq import mixers

F64 = dict(rtol=1e-7, atol=1e-9)
D = 24
SMALL_S4 = {"d_state": 8, "chunk_size": 16, "l_max": 64}


def make(causal, combine="concat", ssm="s4", **kw):
    torch.manual_seed(0)
    opts = SMALL_S4 if ssm == "s4" else {"d_state": 8}
    m = mixers.build(
        "spade", D, num_heads=2, causal=causal, window=16, combine=combine, ssm=ssm, ssm_options=opts, **kw
    )
    return m.double()


def by_hand(m, x, mask):
    """The SPADE layer composed from separately built mixers carrying a copy of m's weights."""
    ssm_opts = {
        **({"pointwise": False} if m.ssm.spec.name == "s4" else {}),
        **(SMALL_S4 if m.ssm.spec.name == "s4" else {"d_state": 8}),
    }
    ssm = mixers.build(m.ssm.spec.name, D, causal=m.causal, **ssm_opts).double()
    ssm.load_state_dict(m.ssm.state_dict())
    loc = mixers.build("local", D, num_heads=2, causal=m.causal, window=16).double()
    loc.load_state_dict(m.local.state_dict())
    g = ssm(x, mask)
    if m.combine == "stack":
        y = loc(g, mask)
    else:
        l = loc(x, mask)
        ln = lambda t, n: F.layer_norm(t, (D,), n.weight, n.bias, n.eps)  # noqa: E731
        g, l = ln(g, m.norm_global), ln(l, m.norm_local)
        if m.combine == "concat":
            y = torch.cat([g, l], -1) @ m.aggregate.weight.T + m.aggregate.bias
        else:
            y = m.ssm_weight * g + (1 - m.ssm_weight) * l
    if mask is not None:
        y = y * mask[..., None]
    return y, ssm, loc


@pytest.mark.parametrize("combine", ["concat", "add", "stack"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 65])
def test_matches_composed_mixers(combine, causal, L):
    m = make(causal, combine)
    x = torch.randn(2, L, D, dtype=torch.float64, requires_grad=True)
    mask = None
    if L > 1:
        mask = torch.ones(2, L, dtype=torch.bool)
        mask[1, L // 2 :] = False
    y = m(x, mask)
    y_ref, ssm, loc = by_hand(m, x, mask)
    torch.testing.assert_close(y, y_ref, **F64)
    w = torch.randn_like(y)
    (gx,) = torch.autograd.grad((y * w).sum(), x, retain_graph=True)
    (gx_ref,) = torch.autograd.grad((y_ref * w).sum(), x, retain_graph=True)
    torch.testing.assert_close(gx, gx_ref, **F64)
    # parameter gradients of the two branches
    mine = dict(m.named_parameters())
    ref = {**{f"ssm.{k}": p for k, p in ssm.named_parameters()}, **{f"local.{k}": p for k, p in loc.named_parameters()}}
    names = sorted(ref)
    g_mine = torch.autograd.grad((y * w).sum(), [mine[n] for n in names], allow_unused=True)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [ref[n] for n in names], allow_unused=True)
    for n, a, b in zip(names, g_mine, g_ref):
        if a is None or b is None:
            assert a is None and b is None, n
            continue
        torch.testing.assert_close(a, b, **F64, msg=n)


def test_s4d_branch_and_200_tokens():
    m = make(True, "concat", ssm="s4d")
    x = torch.randn(1, 200, D, dtype=torch.float64)
    torch.testing.assert_close(m(x), by_hand(m, x, None)[0], **F64)


def test_step_equals_forward():
    """``stack`` (concat is covered by the conformance suite)."""
    m = make(True, "stack").eval()
    x = torch.randn(2, 20, D, dtype=torch.float64)
    y = m(x)
    state, ys = m.init_state(2), []
    for t in range(x.shape[1]):
        y_t, state = m.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **F64)
    assert m.state_size(20) == m.ssm.state_size(20) + m.local.state_size(20)


def test_defaults_follow_the_paper():
    m = mixers.build("spade", 32, causal=True)
    assert m.combine == "concat" and m.ssm.spec.name == "s4" and m.ssm.out is None  # no pointwise layer
    assert m.aggregate.weight.shape == (32, 64) and m.local.window == 128
    assert longseq.mixers.spec("spade").flops(1024, 32, 1, True) > 0


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"ssm": "mamba"}, "ssm"),
        ({"combine": "mul"}, "combine"),
        ({"ssm_weight": 2.0}, "ssm_weight"),
        ({"ssm_options": 3}, "ssm_options"),
        ({"ssm_options": {"nope": 1}}, "nope"),
    ],
)
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        mixers.build("spade", 16, causal=True, **bad)
