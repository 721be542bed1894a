"""Treeformer TF/TC attention against plain dense references (float64, values and gradients).

The references recompute the routing independently (all node scores at once, then a walk down
the tree), build the straight-through memberships as products of the chosen branches' sigmoids,
and apply them densely: TF as an N x N same-leaf mask on full softmax attention, TC as a
[nodes, N] membership matrix giving every node's mean key/value and a softmax over the query's
path nodes. Tolerances: float64, rtol 1e-9 / atol 1e-10.
"""

import pytest
import torch

import longseq.mixers as M
from longseq.mixers.treeformer import TreeformerTC, TreeformerTF, treeformer_bootstrap
from longseq.models.classifier import SequenceClassifier

TOL = dict(rtol=1e-9, atol=1e-10)


def ste(c):
    return 1.0 + (c - c.detach())


def ref_route(x, w, b, depth):
    """x: [B, H, L, Dh] -> (path [B, H, L, depth+1] heap ids, member [B, H, L, depth+1])."""
    s_all = torch.einsum("bhld,hnd->bhln", x, w) + b[None, :, None, :]  # every node's score
    node = torch.zeros(x.shape[:3], dtype=torch.long)
    g = torch.ones(x.shape[:3], dtype=x.dtype)
    path, member = [node], [g]
    for _ in range(depth):
        s = torch.gather(s_all, 3, node[..., None])[..., 0]
        c = torch.where(s > 0, torch.sigmoid(s), 1 - torch.sigmoid(s))
        node = torch.where(s > 0, 2 * node + 2, 2 * node + 1)
        g = g * ste(c)
        path.append(node)
        member.append(g)
    path, member = torch.stack(path, -1), torch.stack(member, -1)
    return path, member


def ref_forward(m, x, mask, kind):
    B, L, D = x.shape
    H, Dh = m.num_heads, m.head_dim
    if mask is not None:
        x = x * mask[..., None]
    q, k, v = m.qkv(x).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)  # [B, H, L, Dh]
    qp, qm = ref_route(q, m.tree_w, m.tree_b, m.depth)
    kp, km = ref_route(k, m.tree_w, m.tree_b, m.depth)
    real = torch.ones(B, L, dtype=torch.bool) if mask is None else mask
    if kind == "tf":
        allowed = (qp[..., -1][..., :, None] == kp[..., -1][..., None, :]) & real[:, None, None, :]
        logits = (q @ k.transpose(-1, -2)) / Dh**0.5
        logits = logits.masked_fill(~allowed, float("-inf"))
        mx = logits.detach().amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
        e = torch.exp(logits - mx) * km[..., -1][..., None, :]
        z = e.sum(-1, keepdim=True)
        o = (e / torch.where(z > 0, z, torch.ones_like(z))) @ v * qm[..., -1][..., None]
    else:
        n_nodes = 2 ** (m.depth + 1) - 1
        nodes = torch.arange(n_nodes)
        on_k = kp[..., None, :] == nodes[:, None]  # [B, H, L, n, h+1]
        Mk = (on_k * km[..., None, :]).sum(-1) * real[:, None, :, None]  # [B, H, L, n]
        cnt = Mk.sum(2)  # [B, H, n]
        kbar = torch.einsum("bhln,bhld->bhnd", Mk, k) / cnt.clamp_min(1)[..., None]
        vbar = torch.einsum("bhln,bhld->bhnd", Mk, v) / cnt.clamp_min(1)[..., None]
        Mq = ((qp[..., None, :] == nodes[:, None]) * qm[..., None, :]).sum(-1)  # [B, H, L, n]
        onpath = (qp[..., None, :] == nodes[:, None]).any(-1) & (cnt.detach() > 0)[:, :, None, :]
        logits = torch.einsum("bhld,bhnd->bhln", q, kbar) / Dh**0.5
        logits = logits.masked_fill(~onpath, float("-inf"))
        mx = logits.detach().amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
        e = torch.exp(logits - mx) * Mq
        z = e.sum(-1, keepdim=True)
        o = (e / torch.where(z > 0, z, torch.ones_like(z))) @ vbar
    y = m.out(o.transpose(1, 2).reshape(B, L, D))
    return y if mask is None else y * mask[..., None]


def make(kind, depth, heads=2, d=24, seed=0, **opts):
    torch.manual_seed(seed)
    name = "treeformer_tf" if kind == "tf" else "treeformer_tc"
    m = M.build(name, d, num_heads=heads, depth=depth, **opts).double()
    with torch.no_grad():  # non-zero biases: unbalanced, some empty leaves
        m.tree_b.normal_(0, 0.3)
    return m


def check_against_reference(m, kind, x, mask=None):
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    r = torch.randn(x.shape, dtype=x.dtype)
    y1 = m(x1, mask)
    (y1 * r).sum().backward()
    g1 = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    y2 = ref_forward(m, x2, mask, kind)
    (y2 * r).sum().backward()
    torch.testing.assert_close(y1, y2, **TOL)
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    for n, p in m.named_parameters():
        torch.testing.assert_close(g1[n], p.grad, **TOL, msg=n)
    if x.shape[1] > 1:
        assert g1["tree_w"].abs().sum() > 0 and g1["tree_b"].abs().sum() > 0, "no straight-through gradient"
    m.zero_grad()


@pytest.mark.parametrize("kind", ["tf", "tc"])
@pytest.mark.parametrize(
    "L,depth,heads,d,block",
    [(1, 2, 1, 12, 4), (63, 3, 2, 24, 8), (65, 2, 3, 36, 16), (200, 4, 1, 12, 7), (37, 5, 2, 24, 64)],
)
def test_matches_dense_reference(kind, L, depth, heads, d, block):
    opts = {"block_size": block} if kind == "tf" else {}
    m = make(kind, depth, heads, d, seed=L, **opts)
    x = torch.randn(2, L, d, dtype=torch.float64)
    check_against_reference(m, kind, x)


@pytest.mark.parametrize("kind", ["tf", "tc"])
def test_padding_mask_matches_reference(kind):
    m = make(kind, 3, block_size=8) if kind == "tf" else make(kind, 3)
    x = torch.randn(3, 41, 24, dtype=torch.float64)
    mask = torch.arange(41)[None, :] < torch.tensor([41, 17, 1])[:, None]
    check_against_reference(m, kind, x, mask)


def test_empty_leaves_give_zero_output_in_tf():
    """Depth 6 (64 leaves) over 20 tokens: many queries land in leaves without keys -> output 0."""
    m = make("tf", 6, heads=1, d=12, block_size=4)
    x = torch.randn(1, 20, 12, dtype=torch.float64)
    q, k, _ = m.qkv(x).view(1, 20, 3, 1, 12).permute(2, 0, 3, 1, 4)
    q_leaf = ref_route(q, m.tree_w, m.tree_b, 6)[0][..., -1]
    k_leaf = ref_route(k, m.tree_w, m.tree_b, 6)[0][..., -1]
    lonely = ~(q_leaf[..., :, None] == k_leaf[..., None, :]).any(-1)[0, 0]  # [L]
    assert lonely.any() and not lonely.all()
    y = m(x)
    assert (y[0, lonely] == 0).all()
    check_against_reference(m, "tf", x)


def test_tc_gives_every_real_key_a_gradient():
    m = make("tc", 4, heads=1, d=12)
    x = torch.randn(1, 30, 12, dtype=torch.float64)
    _, k, v = m.qkv(x).view(1, 30, 3, 1, 12).permute(2, 0, 3, 1, 4)
    k, v = k.detach().requires_grad_(True), v.detach().requires_grad_(True)
    from longseq.mixers.treeformer import route, tc_attention

    q = k.detach() + 0.1 * torch.randn_like(k)
    qn, qm = route(q, m.tree_w, m.tree_b, 4)
    kn, km = route(k, m.tree_w, m.tree_b, 4)
    o = tc_attention(q[0], k[0], v[0], qn[0], qm[0], kn[0], km[0], None, 31)
    (o * torch.randn_like(o)).sum().backward()
    assert (v.grad.abs().sum(-1) > 0).all() and (k.grad.abs().sum(-1) > 0).all()


def test_hard_forward_does_not_depend_on_straight_through():
    """Forward equals attention under the hard routing with every membership replaced by 1."""
    m = make("tf", 3, block_size=8)
    x = torch.randn(2, 50, 24, dtype=torch.float64)
    y = m(x)
    with torch.no_grad():
        yr = ref_forward(m, x, None, "tf")
    torch.testing.assert_close(y, yr, **TOL)


def test_tf_large_leaf_block_pairs():
    """depth 1 -> two big leaves spanning many key blocks (a degenerate, near-dense tree)."""
    m = make("tf", 1, heads=1, d=12, block_size=5)
    check_against_reference(m, "tf", torch.randn(1, 97, 12, dtype=torch.float64))


def test_tc_steps_bootstrap_schedule():
    torch.manual_seed(0)
    tf = M.build("treeformer_tf", 24, num_heads=2, depth=3, block_size=8, tc_steps=2)
    tc = M.build("treeformer_tc", 24, num_heads=2, depth=3)
    tc.load_state_dict({k: v for k, v in tf.state_dict().items() if k != "train_steps"})
    x = torch.randn(2, 33, 24)
    tf.eval()
    torch.testing.assert_close(tf(x), tc(x))  # before the switch: TC, eval too
    assert int(tf.train_steps) == 0  # eval passes do not count
    tf.train()
    torch.testing.assert_close(tf(x), tc(x))
    torch.testing.assert_close(tf(x), tc(x))
    y_tf = tf(x)  # third training pass: TF
    assert not torch.allclose(y_tf, tc(x))
    tf.eval()
    torch.testing.assert_close(tf(x), y_tf)
    assert int(tf.train_steps) == 3


def test_treeformer_bootstrap_converts_layers_keeping_weights():
    torch.manual_seed(0)
    model = SequenceClassifier(
        11, 3, d_model=24, n_layers=2, mixer="treeformer_tc", num_heads=2, mixer_options={"depth": 3}
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    treeformer_bootstrap(model, "treeformer_tf", block_size=8)
    tfs = [m for m in model.modules() if isinstance(m, TreeformerTF)]
    assert len(tfs) == 2 and not any(isinstance(m, TreeformerTC) for m in model.modules())
    after = model.state_dict()
    for k, v in before.items():
        torch.testing.assert_close(after[k], v)
    tokens = torch.randint(0, 11, (2, 19))
    assert torch.isfinite(model(tokens)).all()

    dense = SequenceClassifier(11, 3, d_model=24, n_layers=1, mixer="softmax", num_heads=2)
    w = dense.state_dict()
    treeformer_bootstrap(dense, "treeformer_tc", depth=2)
    for k, v in dense.state_dict().items():
        if k in w:
            torch.testing.assert_close(v, w[k])


def test_option_errors():
    with pytest.raises(ValueError, match="depth"):
        M.build("treeformer_tc", 16, depth=0)
    with pytest.raises(ValueError, match="block_size"):
        M.build("treeformer_tf", 16, block_size=0)
    with pytest.raises(ValueError, match="tc_steps"):
        M.build("treeformer_tf", 16, tc_steps=-1)
    with pytest.raises(ValueError, match="causal"):
        M.build("treeformer_tf", 16, causal=True)
    with pytest.raises(ValueError, match="target"):
        treeformer_bootstrap(torch.nn.Linear(2, 2), "softmax")
    with pytest.raises(ValueError, match="no bidirectional softmax"):
        treeformer_bootstrap(torch.nn.Linear(2, 2))


def test_float32_large_inputs_and_bf16():
    m = M.build("treeformer_tf", 32, num_heads=2, depth=3, block_size=8)
    x = torch.randn(2, 70, 32) * 100
    x.requires_grad_(True)
    y = m(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    tc = M.build("treeformer_tc", 32, num_heads=2, depth=3)
    assert torch.isfinite(tc(x.detach())).all()
    assert torch.isfinite(m.bfloat16()(x.detach().bfloat16())).all()
    assert torch.isfinite(tc.bfloat16()(x.detach().bfloat16())).all()


def test_cli_bootstrap_schedule(tmp_path, capsys):
    """``--mixer treeformer_tf --mixer-option tc_steps=N``: TC first, TF after, counter checkpointed."""
    from longseq.cli import main
    from longseq.train.trainer import load_checkpoint

    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "mqar",
        "--task-option",
        "classify=true",
        "--task-option",
        "n_train=64",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--mixer",
        "treeformer_tf",
        "--mixer-option",
        "depth=2",
        "--mixer-option",
        "tc_steps=2",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--eval-every",
        "3",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "test: accuracy" in capsys.readouterr().out
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    counters = [v for k, v in state.items() if k.endswith("train_steps")]
    assert counters and all(int(c) == 3 for c in counters)
