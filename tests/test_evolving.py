"""Evolving attention: a stack of mixers against a hand-written loop over (i, j), and the
stack-level contract (causality, padding, step / split forward) through the Backbone carry hook.

Equalities in float64: values and gradients to rtol 1e-9, atol 1e-11 (the loop and the conv2d
path differ only in summation order).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import longseq
from longseq.models import Backbone, CausalLM

D, H = 16, 2
TOL = dict(rtol=1e-9, atol=1e-11)


def build_stack(n, causal, seed=0, **opts):
    torch.manual_seed(seed)
    ms = [longseq.mixers.build("evolving", D, num_heads=H, causal=causal, **opts).double() for _ in range(n)]
    with torch.no_grad():
        for m in ms:  # a conv strong enough to matter, and a bias so that masking is exercised
            m.conv.weight.normal_(0, 0.5)
            m.conv.bias.normal_(0, 0.5)
    return ms


def run_stack(ms, x, mask=None):
    carry = {}
    for m in ms:
        x = x + m(x, mask, carry=carry)
    return x


def reference_stack(ms, x, mask=None):
    """The same residual stack with the evolving step written as loops over (head, i, j).

    Each entry is a ``[B]`` tensor (the batch is vectorised); no conv2d, no masked_fill.
    """
    B, N, _ = x.shape
    Dh = D // H
    causal = ms[0].causal
    real = torch.ones(B, N, dtype=torch.bool) if mask is None else mask
    prev = None
    for m in ms:
        qkv = F.linear(x, m.qkv.weight)  # [B, N, 3D]
        q, k, v = (qkv[..., i * D : (i + 1) * D].reshape(B, N, H, Dh) for i in range(3))
        W, bias = m.conv.weight, m.conv.bias  # [H, H, 3, 3], [H]

        def ok(b, i, j):
            return bool(real[b, i]) and bool(real[b, j]) and (not causal or j <= i)

        S = [
            [[(q[:, i, h] * k[:, j, h]).sum(-1) / math.sqrt(Dh) for j in range(N)] for i in range(N)] for h in range(H)
        ]
        mask_ij = [
            [torch.tensor([1.0 if ok(b, i, j) else 0.0 for b in range(B)], dtype=x.dtype) for j in range(N)]
            for i in range(N)
        ]
        if prev is None:
            logits = S
        else:
            A = [
                [
                    [((1 - m.beta) * S[h][i][j] + m.beta * prev[h][i][j]) * mask_ij[i][j] for j in range(N)]
                    for i in range(N)
                ]
                for h in range(H)
            ]
            row0 = 2 if causal else 1  # causal kernel reads rows i-2..i, else i-1..i+1
            logits = [[[None] * N for _ in range(N)] for _ in range(H)]
            for h in range(H):
                for i in range(N):
                    for j in range(N):
                        c = bias[h].expand(B)
                        for g in range(H):
                            for di in range(3):
                                for dj in range(3):
                                    r, cc = i + di - row0, j + dj - 1
                                    if 0 <= r < N and 0 <= cc < N:
                                        c = c + W[h, g, di, dj] * A[g][r][cc]
                        logits[h][i][j] = m.alpha * torch.relu(c) + (1 - m.alpha) * A[h][i][j]

        def attend(b, i, h):  # softmax over the allowed keys of (b, i, h); a padded query sees itself
            js = [j for j in range(N) if ok(b, i, j)] or [i]
            p = torch.softmax(torch.stack([logits[h][i][j][b] for j in js]), 0)
            return sum(p[t] * v[b, j, h] for t, j in enumerate(js))  # [Dh]

        out = torch.stack(
            [torch.stack([torch.cat([attend(b, i, h) for h in range(H)]) for i in range(N)]) for b in range(B)]
        )  # [B, N, D]
        y = F.linear(out, m.out.weight)
        if mask is not None:
            y = y * mask[..., None]
        x = x + y
        prev = logits
    return x


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
def test_stack_matches_loop_values_and_grads(causal, padded):
    ms = build_stack(3, causal)
    B, N = 2, 7
    x = torch.randn(B, N, D, dtype=torch.float64)
    mask = torch.arange(N)[None] < torch.tensor([N, 4])[:, None] if padded else None
    if mask is not None:
        x = x * mask[..., None]
    params = [*ms[0].qkv.parameters(), *ms[0].out.parameters()] + [p for m in ms[1:] for p in m.parameters()]

    xa = x.clone().requires_grad_(True)
    ya = run_stack(ms, xa, mask)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad((ya * g).sum(), [xa, *params])

    xb = x.clone().requires_grad_(True)
    yb = reference_stack(ms, xb, mask)
    gb = torch.autograd.grad((yb * g).sum(), [xb, *params])

    torch.testing.assert_close(ya, yb, **TOL)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, **TOL)
    assert ga[-1].abs().sum() > 0  # the last layer's conv bias received gradient: the conv is live


def test_evolving_changes_the_output():
    """With previous logits the layer is no longer plain softmax attention (guards a dead hook)."""
    ms = build_stack(2, True)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    y_chain = run_stack(ms, x)
    y_plain = x + ms[0](x)
    y_plain = y_plain + ms[1](y_plain)
    assert (y_chain - y_plain).abs().max() > 1e-3


def lm(n_layers=3, mixer="evolving", seed=0, **kw):
    torch.manual_seed(seed)
    m = CausalLM(50, d_model=D, n_layers=n_layers, mixer=mixer, num_heads=H, position="rope", **kw).double().eval()
    for b in m.backbone.blocks:
        if hasattr(b.mixer, "conv"):
            with torch.no_grad():
                b.mixer.conv.weight.normal_(0, 0.5)
                b.mixer.conv.bias.normal_(0, 0.5)
    return m


def test_causality_through_the_stack():
    m = lm()
    ids = torch.randint(0, 50, (2, 24))
    for t in (0, 17):
        ids2 = ids.clone()
        ids2[:, t + 1 :] = torch.randint(0, 50, (2, 23 - t))
        torch.testing.assert_close(m(ids)[:, : t + 1], m(ids2)[:, : t + 1], rtol=0, atol=0)
    assert (m(ids)[:, 18:] - m(ids2)[:, 18:]).abs().max() > 0


def test_step_and_split_forward_match_forward():
    m = lm()
    ids = torch.randint(0, 50, (2, 23))
    y = m(ids)
    state = m.init_state(2)
    ys = []
    for t in range(ids.shape[1]):
        y_t, state = m.step(ids[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **TOL)
    for split in (1, 2, 9):
        y1, s = m(ids[:, :split], return_state=True)
        y2, s = m(ids[:, split:], state=s, return_state=True)
        torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    assert m.backbone.blocks[1].mixer.state_size(23) == 2 * D * 23 + 2 * H * 23


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_padding_invariance_through_the_stack(causal):
    torch.manual_seed(0)
    bb = Backbone(50, D, 3, mixer="evolving", num_heads=H, causal=causal, position="learned", max_len=32).double()
    for b in bb.blocks:
        with torch.no_grad():
            b.mixer.conv.bias.normal_(0, 0.5)
    lengths = [21, 8]
    ids = torch.randint(0, 50, (2, 21))
    mask = torch.arange(21)[None] < torch.tensor(lengths)[:, None]
    y = bb(ids, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(y[b, :n], bb(ids[b : b + 1, :n])[0], **TOL)


def test_carry_links_only_consecutive_evolving_layers():
    m = lm(mixer=["evolving", "softmax", "evolving"])
    ids = torch.randint(0, 50, (2, 12))
    m(ids).sum().backward()
    convs = [b.mixer.conv for b in m.backbone.blocks if hasattr(b.mixer, "conv")]
    assert all(c.bias.grad is None for c in convs)  # each evolving layer is first of its chain
    m = lm()
    m(ids).sum().backward()
    grads = [b.mixer.conv.bias.grad for b in m.backbone.blocks]
    assert grads[0] is None and all(g is not None and g.abs().sum() > 0 for g in grads[1:])


def test_options_and_errors():
    m = longseq.mixers.build("evolving", D, num_heads=H, alpha=1.0, beta=0.0, activation="leaky_relu")
    assert (m.alpha, m.beta, m.activation) == (1.0, 0.0, "leaky_relu")
    for bad in (dict(alpha=1.5), dict(beta=-0.1), dict(alpha="x")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            longseq.mixers.build("evolving", D, num_heads=H, **bad)
    with pytest.raises(ValueError, match="activation"):
        longseq.mixers.build("evolving", D, num_heads=H, activation="gelu")
    a, b = build_stack(2, False)
    carry = {"attn_logits": torch.zeros(1, H, 3, 3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="previous layer's logits"):
        a(torch.randn(1, 4, D, dtype=torch.float64), carry=carry)


def test_cli_mixer_option(tmp_path, capsys):
    from longseq.cli import main

    args = [
        "train",
        "--task",
        "mqar",
        "--mixer",
        "evolving",
        "--mixer-option",
        "alpha=0.5",
        "--mixer-option",
        "beta=0.3",
        "--task-option",
        "n_train=32",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--eval-every",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    assert "test: accuracy" in capsys.readouterr().out
