"""Stack RNNs: Lang's algorithm against brute-force enumeration of PDA runs (values and
gradients, float64), the limited stack against runs dropped by the window, window >= n equals
the full stack, step == forward == split forward, the superposition stack against a loop."""

import pytest
import torch

import longseq
from longseq.ops.stack.lang import LangStack, scale_actions
from longseq.ops.stack.naive import brute_force_alpha
from longseq.ops.stack.superposition import superposition_update


def _logits(n, B, Q, S, seed):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, B, Q, S, Q, S, generator=g, dtype=torch.float64),
        torch.randn(n, B, Q, S, Q, S, generator=g, dtype=torch.float64),
        torch.randn(n, B, Q, S, Q, generator=g, dtype=torch.float64),
    )


def _weights_one(lp, lr, lo, normalize):
    """Per-sequence weights as the papers define them (no rescaling): [n, Q, S, Q, S] x2, [n, Q, S, Q]."""
    n, Q, S = lp.shape[:3]
    if not normalize:
        return lp.exp(), lr.exp(), lo.exp()
    N = Q * S
    w = torch.cat([lp.reshape(n, N, N), lr.reshape(n, N, N), lo.reshape(n, N, Q)], -1).softmax(-1)
    return (
        w[..., :N].reshape(n, Q, S, Q, S),
        w[..., N : 2 * N].reshape(n, Q, S, Q, S),
        w[..., 2 * N :].reshape(n, Q, S, Q),
    )


def _lang_readings(lp, lr, lo, normalize, window, states=True):
    n, B, Q, S = lp.shape[:4]
    st = LangStack.initial(B, Q, S, window)
    out = [st.reading(states)]
    for j in range(n):
        st = st.update(*scale_actions(lp[j], lr[j], lo[j], normalize))
        out.append(st.reading(states))
    return torch.stack(out, 1)  # [B, n + 1, R]


def _brute_readings(lp, lr, lo, normalize, window, states=True):
    B = lp.shape[1]
    rows = []
    for b in range(B):
        a = brute_force_alpha(*_weights_one(lp[:, b], lr[:, b], lo[:, b], normalize), window=window)  # [n+1, Q, S]
        a = a.flatten(1) if states else a.sum(1)
        rows.append(a / a.sum(-1, keepdim=True))
    return torch.stack(rows)


@pytest.mark.parametrize("Q,S,n", [(1, 2, 5), (2, 2, 5), (2, 3, 4), (3, 2, 4), (1, 1, 5)])
@pytest.mark.parametrize("normalize", [True, False])
def test_lang_equals_brute_force(Q, S, n, normalize):
    lp, lr, lo = _logits(n, 2, Q, S, seed=Q * 100 + S * 10 + n)
    for states in (True, False):
        got = _lang_readings(lp, lr, lo, normalize, None, states)
        ref = _brute_readings(lp, lr, lo, normalize, None, states)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("normalize", [True, False])
def test_limited_stack_equals_brute_force_with_window(window, normalize):
    """The limited stack: exactly the runs in which no top element is older than the window."""
    lp, lr, lo = _logits(5, 2, 2, 2, seed=window)
    got = _lang_readings(lp, lr, lo, normalize, window)
    ref = _brute_readings(lp, lr, lo, normalize, window)
    finite = torch.isfinite(ref)
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("normalize", [True, False])
def test_window_at_least_n_equals_full(normalize):
    lp, lr, lo = _logits(6, 3, 2, 3, seed=7)
    full = _lang_readings(lp, lr, lo, normalize, None)
    for D in (7, 9):  # n updates reach time 6: segments up to 7 long (from time -1)
        torch.testing.assert_close(_lang_readings(lp, lr, lo, normalize, D), full, rtol=1e-13, atol=1e-14)
    assert not torch.allclose(_lang_readings(lp, lr, lo, normalize, 3), full)


@pytest.mark.parametrize("normalize", [True, False])
def test_lang_gradients_equal_brute_force(normalize):
    """d(random projection of the readings)/d(logits): Lang's algorithm vs autograd through the enumeration."""
    lp, lr, lo = _logits(4, 1, 2, 2, seed=3)
    proj = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (_lang_readings, _brute_readings):
        leaves = [t.clone().requires_grad_(True) for t in (lp, lr, lo)]
        (fn(*leaves, normalize, None)[0] * proj).sum().backward()
        grads.append([t.grad for t in leaves])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def _mixer(name, **kw):
    torch.manual_seed(0)
    opts = dict(hidden_size=8, num_states=2, stack_symbols=2)
    opts.update(kw)
    return longseq.mixers.build(name, 12, causal=True, **opts).double().eval()


@pytest.mark.parametrize("name", ["ns_rnn", "rns_rnn"])
def test_mixer_window_at_least_length_equals_full(name):
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    full = _mixer(name)
    lim = _mixer(name, window=9)
    lim.load_state_dict(full.state_dict())
    torch.testing.assert_close(lim(x), full(x), rtol=1e-12, atol=1e-12)
    short = _mixer(name, window=2)
    short.load_state_dict(full.state_dict())
    assert not torch.allclose(short(x), full(x))


@pytest.mark.parametrize(
    "name,kw", [("ns_rnn", {}), ("rns_rnn", {}), ("rns_rnn", {"window": 4}), ("superposition_stack", {}), ("lstm", {})]
)
def test_step_forward_split_agree(name, kw):
    kw = dict(kw)
    if name in ("superposition_stack", "lstm"):
        torch.manual_seed(0)
        m = longseq.mixers.build(name, 12, causal=True, hidden_size=8, **kw).double().eval()
    else:
        m = _mixer(name, **kw)
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    y = m(x)
    st = m.init_state(2)
    steps = []
    for t in range(11):
        yt, st = m.step(x[:, t], st)
        steps.append(yt)
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-10, atol=1e-12)
    y1, st = m(x[:, :4], return_state=True)
    y2, st = m(x[:, 4:7], state=st, return_state=True)
    y3, _ = m(x[:, 7:], state=st, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y, rtol=1e-10, atol=1e-12)


def test_readings_sizes_and_variants():
    ns, rns = _mixer("ns_rnn", stack_symbols=3), _mixer("rns_rnn", stack_symbols=3)
    assert ns.normalize and not ns.state_reading and ns._reading_size() == 3
    assert not rns.normalize and rns.state_reading and rns._reading_size() == 6
    h = torch.randn(4, 8, dtype=torch.float64)
    push, repl, pop = ns.action_weights(h)
    total = push.sum(-1) + repl.sum(-1) + pop.sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total))  # NS-RNN: probabilities per (q, x)
    push, repl, pop = rns.action_weights(h)
    assert (push > 0).all() and (push.sum(-1) + repl.sum(-1) + pop.sum(-1)).amax(-1).sub(1).abs().max() < 1e-12


def test_long_sequence_stays_finite_and_state_bounded():
    """The rescaled real semiring over 300 steps: finite outputs/gradients; the limited stack's state
    stays O(D^2) while the full one grows."""
    m = _mixer("rns_rnn", window=8)
    m.train()
    x = (torch.randn(1, 300, 12, dtype=torch.float64) * 3).requires_grad_(True)
    y, st = m(x, return_state=True)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert len(st["stack"].cols) == 8 and st["stack"].alpha.shape[1] == 9
    _, st_full = _mixer("rns_rnn")(x[:, :30].detach(), return_state=True)
    assert len(st_full["stack"].cols) == 30


def test_superposition_update_against_loop():
    g = torch.Generator().manual_seed(0)
    B, m, H = 2, 3, 4
    el = torch.rand(B, m, H, generator=g, dtype=torch.float64)
    a = torch.rand(B, 3, generator=g, dtype=torch.float64).softmax(-1)
    v = torch.rand(B, m, generator=g, dtype=torch.float64)
    got = superposition_update(el, a[:, 0], a[:, 1], a[:, 2], v)
    ref = torch.zeros(B, m, H + 1, dtype=torch.float64)

    def at(i):
        return el[:, :, i] if 0 <= i < H else torch.zeros(B, m, dtype=torch.float64)

    for i in range(H + 1):
        ref[:, :, i] = a[:, 0:1] * (v if i == 0 else at(i - 1)) + a[:, 1:2] * at(i + 1) + a[:, 2:3] * at(i)
    torch.testing.assert_close(got, ref, rtol=1e-14, atol=1e-15)


def test_on_a_cfl_task_through_the_trainer(tmp_path):
    from longseq import tasks
    from longseq.train import TrainConfig, build_model, train

    task = tasks.build(
        "marked_reversal",
        train_lengths=[5, 9],
        val_lengths=[5, 9],
        test_lengths=[5, 13],
        n_train=40,
        n_val=10,
        n_test_per_length=2,
    )
    torch.manual_seed(0)
    model = build_model(task, "rns_rnn", d_model=8, mixer_options={"hidden_size": 8, "window": 6})
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=3, progress=False, lr=1e-2)
    final = train(model, task, cfg)
    assert set(final["test"]) >= {"ce_gap", "lower_bound", "loss"}
    assert final["test"]["ce_gap"] == pytest.approx(final["test"]["loss"] - final["test"]["lower_bound"])


def test_bad_options():
    with pytest.raises(ValueError, match="window"):
        longseq.mixers.build("ns_rnn", 8, causal=True, window=0)
    with pytest.raises(ValueError, match="num_states"):
        longseq.mixers.build("rns_rnn", 8, causal=True, num_states=0)
    with pytest.raises(ValueError, match="no bidirectional mode"):
        longseq.mixers.build("lstm", 8, causal=False)
    with pytest.raises(ValueError, match="stack_size"):
        longseq.mixers.build("superposition_stack", 8, causal=True, stack_size=0)
