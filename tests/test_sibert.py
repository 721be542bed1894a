"""SIBERT recipe (Li et al. 2022): scale-invariant attention and model, the sgd_si optimiser, resume.

Tolerances: float64 throughout; invariance and the loop reference agree to 1e-10 (relative and
absolute), i.e. round-off of a few hundred float64 operations.
"""

import functools
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import longseq
from longseq import mixers
from longseq.cli import main
from longseq.models import CausalLM, SequenceClassifier
from longseq.train import TrainConfig, build_model, train
from longseq.train.sgd_si import SGDSI, build_optimizer

TOL = dict(rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- si_attention
def loop_reference(mixer, x, mask=None):
    """relu(q.k) / sum relu(q.k) over allowed keys, one (batch, head, query) at a time."""
    B, L, D = x.shape
    H, Dh = mixer.num_heads, mixer.head_dim
    q, k, v = (f(x).view(B, L, H, Dh) for f in (mixer.q, mixer.k, mixer.v))
    rows = []
    for b in range(B):
        for i in range(L):
            heads = []
            for h in range(H):
                keys = [
                    j for j in range(L) if (not mixer.causal or j <= i) and (mask is None or bool(mask[b, j]) or j == i)
                ]
                s = torch.stack([torch.relu(q[b, i, h] @ k[b, j, h]) for j in keys])
                o = sum(s[n] * v[b, j, h] for n, j in enumerate(keys))
                heads.append(o / s.sum() if s.sum().item() > 0 else torch.zeros_like(o))
            rows.append(torch.cat(heads))
    y = mixer.out(torch.stack(rows).view(B, L, D))
    return y if mask is None else y * mask[..., None]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("L", [1, 7, 13])
def test_si_attention_matches_loop_reference_values_and_grads(causal, L):
    torch.manual_seed(L)
    m = mixers.build("si_attention", 12, num_heads=2, causal=causal).double()
    x = torch.randn(2, L, 12, dtype=torch.float64, requires_grad=True)
    mask = None if causal else torch.arange(L)[None] < torch.tensor([[L], [max(1, L - 3)]])
    y, ref = m(x, mask), loop_reference(m, x, mask)
    torch.testing.assert_close(y, ref, **TOL)
    w = torch.randn_like(y)
    g = torch.autograd.grad((y * w).sum(), [x, *m.parameters()])
    g_ref = torch.autograd.grad((ref * w).sum(), [x, *m.parameters()])
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **TOL)


def test_si_attention_homogeneity_in_each_matrix():
    torch.manual_seed(0)
    m = mixers.build("si_attention", 16, num_heads=2, causal=True).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    y = m(x)
    with torch.no_grad():
        m.q.weight.mul_(7.0)
        m.k.weight.mul_(0.03)
    torch.testing.assert_close(m(x), y, **TOL)  # degree 0 in W_Q, W_K
    with torch.no_grad():
        m.v.weight.mul_(3.0)
        m.out.weight.mul_(0.5)
    torch.testing.assert_close(m(x), 1.5 * y, **TOL)  # degree 1 in W_V, W_O


# --------------------------------------------------------------------------- scale-invariant models
@functools.cache
def si_models():
    """Small float64 scale-invariant models (built once, without touching the global RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        models = {
            "lm_learned_tied": CausalLM(40, 16, 2, num_heads=2, position="learned", max_len=16, scale_invariant=True),
            "lm_sinusoidal_untied": CausalLM(
                40,
                16,
                1,
                num_heads=2,
                position="sinusoidal",
                tie_embeddings=False,
                norm="rmsnorm",
                scale_invariant=True,
            ),
            "classifier_pair": SequenceClassifier(
                40, 3, 16, 1, num_heads=2, pair=True, position="rope", scale_invariant=True
            ),
        }
        ids = {
            "lm_learned_tied": torch.randint(0, 40, (2, 11)),
            "lm_sinusoidal_untied": torch.randint(0, 40, (2, 11)),
            "classifier_pair": torch.randint(0, 40, (2, 2, 11)),
        }
    return {k: (m.double(), ids[k]) for k, m in models.items()}


SI_MODEL_NAMES = ("lm_learned_tied", "lm_sinusoidal_untied", "classifier_pair")


def scaled(model, constants):
    """A copy of ``model`` with its i-th parameter tensor multiplied by ``constants[i]``."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for p, c in zip(m.parameters(), constants):
            p.mul_(c)
    return m


@settings(max_examples=15, deadline=None)
@given(which=st.sampled_from(SI_MODEL_NAMES), log_c=st.lists(st.floats(-4.0, 4.0), min_size=32, max_size=32))
def test_output_invariant_to_rescaling_each_parameter_group(which, log_c):
    """f(c_1 W_1, ..., c_n W_n) == f(W) for positive constants c_i in [e^-4, e^4], one per tensor;
    the gradient scales as 1/c_i (the consequence of degree-0 homogeneity used by the theory)."""
    model, ids = si_models()[which]
    params = list(model.parameters())
    assert len(params) <= len(log_c)
    cs = [math.exp(v) for v in log_c[: len(params)]]
    other = scaled(model, cs)
    y, y2 = model(ids), other(ids)
    torch.testing.assert_close(y2, y, **TOL)
    g = torch.autograd.grad(y.square().sum(), params)
    g2 = torch.autograd.grad(y2.square().sum(), list(other.parameters()))
    for a, b, c in zip(g, g2, cs):
        torch.testing.assert_close(b * c, a, rtol=1e-8, atol=1e-10)


def test_standard_model_is_not_scale_invariant():
    """The control: the same check fails for the standard model (so the test can fail)."""
    torch.manual_seed(0)
    m = CausalLM(40, 16, 1, num_heads=2).double()
    ids = torch.randint(0, 40, (2, 11))
    assert not torch.allclose(scaled(m, [2.0] * 20)(ids), m(ids), rtol=1e-3)


def test_si_model_step_matches_forward_and_saves(tmp_path):
    m, ids = si_models()["lm_learned_tied"]
    m.eval()
    _, state = m(ids[:, :4], return_state=True)
    outs = []
    for t in range(4, ids.shape[1]):
        logits, state = m.step(ids[:, t], state)
        outs.append(logits)
    torch.testing.assert_close(torch.stack(outs, 1), m(ids)[:, 4:], **TOL)
    m.save(tmp_path / "m")
    loaded = longseq.load(tmp_path / "m")
    assert loaded.config["scale_invariant"] is True
    torch.testing.assert_close(loaded.double()(ids), m(ids), **TOL)


def test_si_model_options_errors():
    with pytest.raises(ValueError, match="not scale invariant"):
        CausalLM(40, 16, 1, mixer="linear", scale_invariant=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        CausalLM(40, 16, 1, norm="none", scale_invariant=True)
    with pytest.raises(ValueError, match="ffn must be"):
        CausalLM(40, 16, 1, ffn="swiglu", scale_invariant=True)
    for kw in (
        {"position": "deberta", "position_options": {"span": 4}},
        {"shortcuts": False},
        {"ffn_options": {"linear": "butterfly"}},
        {"embedding": "hsoftpos"},
    ):
        with pytest.raises(ValueError, match="scale_invariant=True .SIBERT. does not support"):
            CausalLM(40, 16, 1, max_len=8, scale_invariant=True, **kw)
        with pytest.raises(ValueError, match="does not support"):
            SequenceClassifier(40, 3, 16, 1, max_len=8, scale_invariant=True, **kw)
    m = CausalLM(40, 16, 2, mixer=["softmax", {"name": "si_attention"}], scale_invariant=True)
    assert [b.mixer.spec.name for b in m.backbone.blocks] == ["si_attention", "si_attention"]
    assert not any(n.endswith("bias") for n, _ in m.named_parameters())


# --------------------------------------------------------------------------- sgd_si
class TwoScalars(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor([4.0], dtype=torch.float64))  # ||W|| = 5


@pytest.mark.parametrize(
    "slope, expected, clipped",
    [
        # grad (12, -16): norm 20 > bound 2 * sqrt(2 * 0.05 / 0.1) * 5 = 10 -> halved to (6, -8);
        # W <- (1 - 0.1 * 0.05) W - 0.1 g = (2.985, 3.98) - (0.6, -0.8)
        ((12.0, -16.0), (2.385, 4.78), True),
        # grad (3, -4): norm 5 < 10 -> unclipped; W <- (2.985, 3.98) - (0.3, -0.4)
        ((3.0, -4.0), (2.685, 4.38), False),
    ],
)
def test_sgd_si_step_matches_hand_computation(slope, expected, clipped):
    m = TwoScalars()
    opt = build_optimizer(m, "sgd_si", lr=0.1, weight_decay=0.05, si_clip=2.0)
    (slope[0] * m.a + slope[1] * m.b).sum().backward()
    opt.step()
    torch.testing.assert_close(
        torch.cat([m.a, m.b]).detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12
    )
    assert float(opt.last_grad_norm) == pytest.approx(math.hypot(*slope))
    assert float(opt.last_clip_bound) == pytest.approx(10.0)
    # without clipping (si_clip=None) the large gradient is applied in full
    m2 = TwoScalars()
    opt2 = build_optimizer(m2, "sgd_si", lr=0.1, weight_decay=0.05, si_clip=None)
    (slope[0] * m2.a + slope[1] * m2.b).sum().backward()
    opt2.step()
    assert m2.a.item() == pytest.approx(2.985 - 0.1 * slope[0])
    assert (m.a.item() != m2.a.item()) == clipped


def test_sgd_si_errors():
    m = TwoScalars()
    with pytest.raises(ValueError, match="weight_decay must be > 0"):
        SGDSI(m.parameters(), lr=0.1, weight_decay=0.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="lamb").validate()
    with pytest.raises(ValueError, match="fsdp"):
        TrainConfig(optimizer="sgd_si", fsdp=True).validate()
    with pytest.raises(ValueError, match="si_clip"):
        TrainConfig(optimizer="sgd_si", si_clip=-1.0).validate()


def tiny_task():
    return longseq.tasks.build("mqar", seq_len=24, num_kv_pairs=3, vocab_size=64, n_train=96, n_val=20, n_test=20)


def _cfg(**kw):
    base = dict(
        steps=6,
        batch_size=8,
        lr=0.3,
        weight_decay=0.01,
        warmup=2,
        eval_every=3,
        log_every=1,
        checkpoint_every=3,
        progress=False,
        seed=0,
        optimizer="sgd_si",
    )
    return TrainConfig.from_dict({**base, **kw})


def _losses(run_dir):
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r.get("grad_norm")) for r in recs if r["split"] == "train"]


def test_sgd_si_resume_is_bit_exact(tmp_path, monkeypatch):
    task = tiny_task()
    torch.manual_seed(0)
    full = build_model(task, "softmax", d_model=16, dropout=0.1, scale_invariant=True)
    train(full, task, _cfg(), tmp_path / "full")

    import longseq.train.trainer as tr

    real_save = tr._save_checkpoint

    def save_then_die(path, model, opt, sched, step, c, **kw):
        real_save(path, model, opt, sched, step, c, **kw)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(tr, "_save_checkpoint", save_then_die)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(
            build_model(task, "softmax", d_model=16, dropout=0.1, scale_invariant=True), task, _cfg(), tmp_path / "cut"
        )
    monkeypatch.setattr(tr, "_save_checkpoint", real_save)
    torch.manual_seed(123)
    resumed = build_model(task, "softmax", d_model=16, dropout=0.1, scale_invariant=True)
    train(resumed, task, _cfg(), tmp_path / "cut", resume=True)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


def test_cli_scale_invariant_sgd_si(tmp_path, capsys):
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
        "3",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--no-progress",
        "--scale-invariant",
        "--optimizer",
        "sgd_si",
        "--lr",
        "0.5",
        "--weight-decay",
        "0.01",
        "--si-clip",
        "1.5",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["scale_invariant"] is True
    assert cfg["train"]["optimizer"] == "sgd_si" and cfg["train"]["si_clip"] == 1.5
    assert longseq.load(out / "model").backbone.blocks[0].mixer.spec.name == "si_attention"
