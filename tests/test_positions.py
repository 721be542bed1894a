"""Logit position schemes (DeBERTa v1/v2, DIET-ABS/REL + segments) against naive loop formulas.

The references below loop over batch, head, query i and key j in plain Python with the paper's
equations (DeBERTa eq. (4): c2c + c2p at δ(i,j) + p2c at δ(j,i), scale 1/sqrt(3 d_h); DIET:
content/sqrt(d_h) + P_ij + S_{s(i)s(j)}), in float64; values and gradients (input and every
parameter) must agree to 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch

from longseq import mixers
from longseq.models import CausalLM, SequenceClassifier
from longseq.nn.relpos import RelativePositions, log_bucket, segments

D, H = 16, 2


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add synchronisation on a loaded machine
    yield
    torch.set_num_threads(n)


CASES = [
    ("deberta", {"span": 3}),  # clipping engaged (|i - j| up to 6)
    ("deberta", {}),  # span 512: no clipping, row slicing
    ("deberta_v2", {"buckets": 4, "max_position": 5}),  # log buckets and the final clamp
    ("diet_abs", {"rank": 3, "max_len": 12}),
    ("diet_rel", {"span": 2}),
    ("diet_rel", {"span": 3, "num_segments": 3}),
    ("diet_abs", {"rank": 2, "max_len": 9, "num_segments": 2}),
]


def bucket_ref(r: int, buckets: int, max_position: int) -> int:
    mid = buckets // 2
    if abs(r) <= mid:
        return r
    return int(
        math.copysign(mid + math.ceil(math.log(abs(r) / mid) / math.log((max_position - 1) / mid) * (mid - 1)), r)
    )


def reference(m, x, mask, causal, seg=None):
    """Plain loops over (b, h, i, j) of the paper's logit formula, then softmax and projections."""
    rp, src = m.relpos, m.relpos.src
    B, L, _ = x.shape
    Dh = D // H
    x = x * mask[..., None]
    q, k, v = m.qkv(x).view(B, L, 3, H, Dh).unbind(2)  # [B, L, H, Dh]
    if src.scheme.startswith("deberta"):
        P = src.table if src.norm is None else src.norm(src.table)
        if src.scheme == "deberta_v2":
            q_r, k_r, _ = m.qkv(P).view(len(P), 3, H, Dh).unbind(1)
        else:
            q_r, k_r = rp.pos_q(P).view(len(P), H, Dh), rp.pos_k(P).view(len(P), H, Dh)

        def delta(i, j):
            r = i - j if src.scheme == "deberta" else bucket_ref(i - j, src.buckets, src.max_position)
            return min(max(r + src.half, 0), 2 * src.half - 1)

    out = torch.zeros(B, L, H, Dh, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            for i in range(L):
                logits, vals = [], []
                for j in range(L):
                    if not ((mask[b, j] and (j <= i or not causal)) or j == i):
                        continue
                    if src.scheme.startswith("deberta"):
                        a = (
                            q[b, i, h] @ k[b, j, h]
                            + q[b, i, h] @ k_r[delta(i, j), h]
                            + k[b, j, h] @ q_r[delta(j, i), h]
                        ) / math.sqrt(3 * Dh)
                    else:
                        a = q[b, i, h] @ k[b, j, h] / math.sqrt(Dh)
                        if src.scheme == "diet_abs":
                            a = a + src.p_q[h, i] @ src.p_k[h, j]
                        else:
                            a = a + rp.rel[h, min(max(i - j, -src.span), src.span) + src.span]
                        if seg is not None:
                            a = a + rp.seg[h, seg[b, i], seg[b, j]]
                    logits.append(a)
                    vals.append(v[b, j, h])
                w = torch.stack(logits).softmax(0)
                out[b, i, h] = (w[:, None] * torch.stack(vals)).sum(0)
    return m.out(out.reshape(B, L, D)) * mask[..., None]


def randomize_(m):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scheme,opts", CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_matches_loop_reference(scheme, opts, causal):
    torch.manual_seed(0)
    m = mixers.build("softmax", D, num_heads=H, causal=causal, relpos={"scheme": scheme, **opts}).double()
    randomize_(m)
    L = 7
    x = torch.randn(2, L, D, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[1, 5:] = False
    seg = None
    if opts.get("num_segments"):
        seg = torch.randint(0, opts["num_segments"], (2, L))
    with segments(m, seg):
        y = m(x, mask)
    y_ref = reference(m, x, mask, causal, seg)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(y)
    params = [x, *m.parameters()]
    g = torch.autograd.grad((y * w).sum(), params, allow_unused=True)
    g_ref = torch.autograd.grad((y_ref * w).sum(), params, allow_unused=True)
    for a, b in zip(g, g_ref):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("scheme,opts", CASES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(CASES)])
def test_naive_equals_sdpa(scheme, opts, causal):
    """softmax_naive (materialised scores + bias) == softmax (SDPA with a float mask), same weights."""
    torch.manual_seed(0)
    m = mixers.build("softmax", D, num_heads=H, causal=causal, relpos={"scheme": scheme, **opts}).double()
    n = mixers.build("softmax_naive", D, num_heads=H, causal=causal, relpos={"scheme": scheme, **opts}).double()
    randomize_(m)
    n.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, D, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    seg = torch.randint(0, opts["num_segments"], (2, 9)) if opts.get("num_segments") else None
    with segments(m, seg), segments(n, seg):
        torch.testing.assert_close(n(x, mask), m(x, mask), rtol=1e-12, atol=1e-12)


def test_log_bucket_matches_scalar_formula():
    rel = torch.arange(-40, 41)
    got = log_bucket(rel, 8, 30).tolist()
    assert got == [bucket_ref(r, 8, 30) for r in rel.tolist()]
    assert log_bucket(torch.tensor([29, -29]), 8, 30).tolist() == [7, -7]  # buckets - 1 at max_position - 1


@pytest.mark.parametrize("scheme", ["deberta", "deberta_v2", "diet_abs", "diet_rel"])
def test_step_decoding_equals_forward(scheme):
    torch.manual_seed(0)
    model = CausalLM(20, d_model=D, n_layers=2, num_heads=H, position=scheme, max_len=24).double().eval()
    randomize_(model)
    ids = torch.randint(0, 20, (2, 13))
    full = model(ids)
    state = model.init_state(2, dtype=torch.float64)
    steps = []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=1e-9, atol=1e-9)
    # chunked prefill (5 tokens, then 8) continues at the right positions too
    h1, st = model(ids[:, :5], return_state=True)
    h2, _ = model(ids[:, 5:], state=st, return_state=True)
    torch.testing.assert_close(torch.cat([h1, h2], 1), full, rtol=1e-9, atol=1e-9)


def test_deberta_table_shared_across_layers():
    model = CausalLM(20, d_model=D, n_layers=3, num_heads=H, position="deberta", max_len=16)
    tables = [p for n, p in model.named_parameters() if n.endswith("relpos.table")]
    assert len(tables) == 1 and tables[0].shape == (2 * 16, D)
    srcs = {id(b.mixer.relpos.src) for b in model.backbone.blocks}
    assert srcs == {id(model.backbone.relpos)}
    assert set(model.state_dict()) >= {"backbone.relpos.table"}
    assert not any(k.startswith("backbone.blocks") and k.endswith(".table") for k in model.state_dict())


def test_errors():
    with pytest.raises(ValueError, match="no layer's mixer"):
        CausalLM(20, d_model=D, n_layers=1, mixer="s4d", position="deberta")
    with pytest.raises(ValueError, match="max_len"):
        CausalLM(20, d_model=D, n_layers=1, position="diet_abs")
    with pytest.raises(ValueError, match="unknown position scheme"):
        RelativePositions("alibi", D, H)
    with pytest.raises(ValueError, match="relpos"):
        mixers.build("softmax", D, num_heads=H, relpos=3)
    with pytest.raises(ValueError, match="span"):
        mixers.build("softmax", D, num_heads=H, relpos={"scheme": "diet_rel", "span": 0})
    m = mixers.build("softmax", D, num_heads=H, relpos="diet_rel")
    with pytest.raises(ValueError, match="segment"):
        with segments(m, torch.zeros(1, 4, dtype=torch.long)):
            pass


def test_segment_term_in_a_classifier():
    """Token types change the output only through S; equal types in every position = a constant shift."""
    torch.manual_seed(0)
    model = SequenceClassifier(
        20, 2, d_model=D, n_layers=1, num_heads=H, position="diet_rel", max_len=16, position_options={"num_segments": 2}
    ).double()
    randomize_(model)
    ids = torch.randint(0, 20, (3, 10))
    seg = (torch.arange(10) >= 4).long().expand(3, 10)
    with segments(model, seg):
        a = model(ids)
    with segments(model, torch.zeros_like(seg)):
        b = model(ids)
    base = model(ids)
    assert not torch.allclose(a, base)
    torch.testing.assert_close(b, base)  # a row-constant logit shift leaves the softmax unchanged


@pytest.mark.parametrize("scheme", ["deberta", "diet_abs", "diet_rel"])
def test_trains_on_quick_mqar(scheme):
    """Smoke test, not an accuracy claim: the training loss drops over 30 steps."""
    from longseq import tasks
    from longseq.train import build_model

    torch.manual_seed(0)
    task = tasks.build("mqar", preset="quick")
    model = build_model(task, "softmax", position=scheme, d_model=32, n_layers=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    split = task.splits()["train"]
    losses = []
    for step in range(30):
        batch = split.batch(torch.arange(step * 16, step * 16 + 16))
        loss = model.loss(model(batch["inputs"], batch.get("mask")), batch["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2


def test_cli_train_save_load(tmp_path, capsys):
    """`longseq train --position deberta_v2 --position-option buckets=8` trains, saves and reloads."""
    from longseq.cli import main
    from longseq.models.base import load

    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "mqar",
        "--task-option",
        "n_train=64",
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
        "--position",
        "deberta_v2",
        "--position-option",
        "buckets=8",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    model = load(out / "model")
    assert model.backbone.relpos.buckets == 8
    ids = torch.randint(0, model.config["vocab_size"], (1, 12))
    torch.testing.assert_close(model(ids), load(out / "model")(ids))
