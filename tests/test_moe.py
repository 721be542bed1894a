"""Switch Transformer feed-forward (longseq.nn.moe): routing against a naive per-token loop,
capacity overflow, hand-computed auxiliary losses, padding, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from longseq.nn.moe import SwitchFeedForward


def naive_switch(m: SwitchFeedForward, x: torch.Tensor, mask: torch.Tensor | None, capacity_factor):
    """Token by token in batch order: route to the argmax expert while it has free slots."""
    d = x.shape[-1]
    xs = x.reshape(-1, d)
    valid = [True] * xs.shape[0] if mask is None else mask.reshape(-1).tolist()
    n_real = sum(valid)
    cap = math.inf if capacity_factor is None else max(1, math.ceil(capacity_factor * n_real / m.num_experts))
    used = [0] * m.num_experts
    rows = []
    for t in range(xs.shape[0]):
        if not valid[t]:
            rows.append(torch.zeros(d, dtype=x.dtype))
            continue
        p = torch.softmax(m.router @ xs[t], dim=0)
        e = int(p.argmax())
        if used[e] >= cap:  # expert full: dropped, FFN output 0
            rows.append(torch.zeros(d, dtype=x.dtype))
            continue
        used[e] += 1
        h = xs[t] @ m.w1[e] + m.b1[e]
        if m.expert == "mlp":
            h = F.gelu(h)
        else:
            act = F.silu if m.expert == "swiglu" else F.gelu
            h = act(h) * (xs[t] @ m.w3[e] + m.b3[e])
        rows.append(p[e] * (h @ m.w2[e] + m.b2[e]))
    return torch.stack(rows).reshape(x.shape)


@pytest.mark.parametrize("expert,cf,with_mask", [("mlp", 0.75, False), ("swiglu", 1.0, True), ("geglu", None, True)])
def test_routing_matches_naive_loop(expert, cf, with_mask):
    torch.manual_seed(0)
    m = SwitchFeedForward(8, mult=2.0, num_experts=3, capacity_factor=cf, expert=expert).double()
    with torch.no_grad():
        m.router.mul_(30)  # spread the routing over experts
    x = torch.randn(3, 11, 8, dtype=torch.float64, requires_grad=True)
    mask = None
    if with_mask:
        mask = torch.ones(3, 11, dtype=torch.bool)
        mask[1, 7:] = False
        mask[2, 4:] = False
    cap = cf if cf is not None else None
    y = m(x, mask)
    ref = naive_switch(m, x, mask, cap)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    if cf is not None and cf < 1:
        assert m.dropped_fraction > 0  # the case exercises dropping
    params = list(m.parameters())
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, *params], g, allow_unused=True)
    want = torch.autograd.grad(ref, [x, *params], g, allow_unused=True)
    for a, r in zip(got, want):
        if r is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_capacity_overflow_drops_later_tokens_and_residual_passes_them():
    """All 8 tokens prefer expert 0; capacity ceil(1.0 * 8 / 2) = 4: tokens 0-3 kept, 4-7 dropped."""
    from longseq.models.backbone import Block

    torch.manual_seed(0)
    m = SwitchFeedForward(4, num_experts=2, capacity_factor=1.0)
    with torch.no_grad():
        m.router.zero_()
        m.router[0, 0] = 5.0  # expert 0 wins for x[..., 0] > 0
    x = torch.rand(1, 8, 4) + 0.5
    y = m(x)
    assert m.capacity(8) == 4
    assert (y[0, :4].abs().sum(-1) > 0).all()
    assert (y[0, 4:] == 0).all()
    assert float(m.dropped_fraction.detach()) == pytest.approx(0.5)
    # eval: unlimited capacity by default -> nothing dropped
    m.eval()
    y_eval = m(x)
    assert (y_eval[0, 4:].abs().sum(-1) > 0).all() and float(m.dropped_fraction.detach()) == 0
    torch.testing.assert_close(y_eval[0, :4], y[0, :4])
    # inside a block the residual passes the dropped tokens: the FFN adds nothing to them
    blk = Block(
        4,
        mixer="softmax",
        mixer_options={},
        num_heads=1,
        causal=True,
        norm="none",
        ffn="moe",
        ffn_options={"num_experts": 2, "capacity_factor": 1.0},
    )
    blk.ffn.moe.load_state_dict(m.state_dict())
    blk.train()
    h = x + blk.mixer(x)
    out = blk(x)
    torch.testing.assert_close(out[0, 4:], h[0, 4:])
    assert not torch.allclose(out[0, :4], h[0, :4])


def test_aux_loss_hand_computed():
    """E=2, router = identity, tokens x with logits (ln3, 0) x3 and (0, ln3) x1:
    p = (3/4, 1/4) resp. (1/4, 3/4); f = (3/4, 1/4); P = (5/8, 3/8);
    balance = alpha * 2 * (3/4 * 5/8 + 1/4 * 3/8) = 1.125 alpha; z = w * (ln 4)^2."""
    m = SwitchFeedForward(2, num_experts=2, aux_loss_weight=0.01, z_loss_weight=1e-3).double()
    with torch.no_grad():
        m.router.copy_(torch.eye(2))
    a = math.log(3.0)
    x = torch.tensor([[[a, 0.0], [a, 0.0], [0.0, a], [a, 0.0]]], dtype=torch.float64)
    m(x)
    assert float(m.load_balancing_loss.detach()) == pytest.approx(0.01 * 1.125, rel=1e-6)
    assert float(m.z_loss.detach()) == pytest.approx(1e-3 * math.log(4.0) ** 2, rel=1e-6)
    assert float(m.aux_loss.detach()) == pytest.approx(0.01125 + 1e-3 * math.log(4.0) ** 2, rel=1e-6)
    # a padded token (mask False) does not change the statistics
    xp = torch.cat([x, torch.tensor([[[0.0, 9.0]]], dtype=torch.float64)], dim=1)
    mask = torch.tensor([[True, True, True, True, False]])
    y = m(xp, mask)
    assert float(m.load_balancing_loss.detach()) == pytest.approx(0.01125, rel=1e-6)
    assert float(m.z_loss.detach()) == pytest.approx(1e-3 * math.log(4.0) ** 2, rel=1e-6)
    assert (y[0, 4] == 0).all()
    # perfectly balanced routing with uniform probabilities gives alpha (the loss minimum)
    with torch.no_grad():
        m.router.zero_()
    m(x)
    assert float(m.load_balancing_loss.detach()) == pytest.approx(0.01, rel=1e-6)


def test_aux_loss_gradients_reach_router_and_trainer_collects_it():
    from longseq.models import CausalLM
    from longseq.train.trainer import _aux_loss

    torch.manual_seed(0)
    m = SwitchFeedForward(8, num_experts=4, z_loss_weight=1e-3)
    m(torch.randn(2, 16, 8)).sum()
    (g,) = torch.autograd.grad(m.aux_loss, [m.router])
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    model = CausalLM(16, d_model=16, n_layers=2, ffn="moe", ffn_options={"num_experts": 4})
    logits = model(torch.randint(0, 16, (2, 12)))
    total = _aux_loss(model)
    moes = [b.ffn.moe for b in model.backbone.blocks]
    assert torch.is_tensor(total)
    assert float(total.detach()) == pytest.approx(sum(float(x.aux_loss.detach()) for x in moes))
    (logits.sum() + total).backward()
    assert all(x.router.grad is not None and x.router.grad.abs().sum() > 0 for x in moes)


def test_padding_invariance_of_real_tokens():
    """Real tokens of a right-padded batch get the same outputs as the unpadded batch."""
    torch.manual_seed(2)
    m = SwitchFeedForward(8, num_experts=3, capacity_factor=1.0)
    with torch.no_grad():
        m.router.mul_(20)
    x = torch.randn(2, 6, 8)
    y = m(x)
    xp = torch.cat([x, torch.randn(2, 3, 8)], dim=1)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, :6] = True
    # batch order puts sequence 0's padding before sequence 1: the pads must take no slot
    yp = m(xp, mask)
    torch.testing.assert_close(yp[:, :6], y)
    assert (yp[:, 6:] == 0).all()


def test_low_precision_router_in_float32_and_bf16_forward():
    torch.manual_seed(0)
    m = SwitchFeedForward(16, num_experts=4).to(torch.bfloat16)
    y = m(torch.randn(2, 10, 16, dtype=torch.bfloat16) * 100)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert m.aux_loss.dtype == torch.float32


def test_flops_and_parameters_and_errors():
    m = SwitchFeedForward(16, mult=4.0, num_experts=4, capacity_factor=1.0)
    assert sum(p.numel() for p in m.parameters()) == 4 * 16 + 4 * (16 * 64 + 64 + 64 * 16 + 16)
    # with capacity 1.0 the experts cost what one dense FFN costs, plus the router
    assert m.flops(100) == 2 * 100 * 16 * 4 + 2 * 100 * 2 * 16 * 64
    for kw in [
        dict(num_experts=0),
        dict(capacity_factor=0),
        dict(eval_capacity_factor=-1.0),
        dict(aux_loss_weight=-1.0),
        dict(z_loss_weight="x"),
        dict(expert="relu"),
    ]:
        with pytest.raises(ValueError):
            SwitchFeedForward(8, **kw)


def test_trainer_adds_and_logs_aux_loss(monkeypatch):
    import longseq
    import longseq.train.trainer as trainer
    from longseq.train import TrainConfig, build_model, train

    logged = []
    monkeypatch.setattr(trainer._Metrics, "log", lambda self, rec: logged.append(rec))  # no run dir (slow disk)
    task = longseq.tasks.build("mqar", seq_len=24, num_kv_pairs=3, vocab_size=64, n_train=32, n_val=8, n_test=8)
    cfg = TrainConfig.from_dict(
        dict(steps=2, batch_size=8, lr=3e-3, warmup=1, eval_every=2, log_every=1, progress=False, seed=0)
    )
    torch.manual_seed(0)
    train(build_model(task, "softmax", d_model=16, n_layers=1, ffn="moe"), task, cfg)
    train_recs = [r for r in logged if r["split"] == "train"]
    assert len(train_recs) == 2
    # one Switch layer, alpha 1e-2: the balancing loss is alpha * E * sum f P in [alpha, alpha * E]
    assert all(0.01 - 1e-6 <= r["aux_loss"] <= 0.04 + 1e-6 for r in train_recs)
    logged.clear()
    torch.manual_seed(0)
    train(build_model(task, "softmax", d_model=16, n_layers=1), task, cfg)
    assert logged and all("aux_loss" not in r for r in logged)
