"""The mixer contract, checked for every registered mixer with zero per-mixer code.

Equalities are checked in float64 with rtol=1e-7, atol=1e-9 (exact algorithms agree to ~1e-12;
the margin leaves room for different summation orders of chunked/FFT/scan paths).
"""

import pytest
import torch

import longseq
from mixer_options import D_MODEL, heads_for, options_for

F64 = dict(rtol=1e-7, atol=1e-9)


def _modes(name):
    s = longseq.mixers.spec(name)
    return ([True] if s.causal else []) + ([False] if s.bidirectional else [])


CASES = [(n, c) for n in longseq.mixers.names() for c in _modes(n)]
IDS = [f"{n}-{'causal' if c else 'bidir'}" for n, c in CASES]
STEP_CASES = [n for n in longseq.mixers.names() if longseq.mixers.spec(n).step]


def make(name, causal, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    m = longseq.mixers.build(name, D_MODEL, num_heads=heads_for(name), causal=causal, **options_for(name))
    return m.to(dtype).eval()


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
@pytest.mark.parametrize("L", [1, 67])
def test_shape_dtype_finite_grads(name, causal, L):
    m = make(name, causal, torch.float32).train()
    x = torch.randn(2, L, D_MODEL, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in m.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name,causal", [c for c in CASES if c[1]], ids=[i for c, i in zip(CASES, IDS) if c[1]])
def test_causality(name, causal):
    m = make(name, causal)
    x = torch.randn(2, 67, D_MODEL, dtype=torch.float64)
    t = 40
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 3
    torch.testing.assert_close(m(x)[:, : t + 1], m(x2)[:, : t + 1], **F64)


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
def test_padding_invariance(name, causal):
    """A right-padded batch gives, at real positions, the outputs of each sequence run alone."""
    m = make(name, causal)
    lengths = [67, 29]
    L = max(lengths)
    x = torch.randn(len(lengths), L, D_MODEL, dtype=torch.float64)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    y = m(x, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(y[b, :n], m(x[b : b + 1, :n])[0], **F64)
    assert (y[~mask] == 0).all(), "outputs at padded positions must be zero"


@pytest.mark.parametrize("name", STEP_CASES)
@pytest.mark.parametrize("L", [1, 67])
def test_step_equals_forward(name, L):
    m = make(name, True)
    x = torch.randn(2, L, D_MODEL, dtype=torch.float64)
    y = m(x)
    state = m.init_state(2)
    ys = []
    for t in range(L):
        y_t, state = m.step(x[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, **F64)


@pytest.mark.parametrize("name", STEP_CASES)
@pytest.mark.parametrize("split", [1, 30])
def test_split_forward_with_state(name, split):
    m = make(name, True)
    x = torch.randn(2, 67, D_MODEL, dtype=torch.float64)
    y = m(x)
    y1, s = m(x[:, :split], return_state=True)
    y2, s = m(x[:, split:], state=s, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **F64)
    assert m.state_size(67) > 0


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
def test_deterministic_under_seed(name, causal):
    x = torch.randn(2, 67, D_MODEL)
    y1 = make(name, causal, torch.float32, seed=1)(x)
    y2 = make(name, causal, torch.float32, seed=1)(x)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
def test_bad_inputs_give_clear_errors(name, causal):
    m = make(name, causal, torch.float32)
    with pytest.raises(ValueError, match="d_model"):
        m(torch.randn(2, 5, D_MODEL + 1))
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(5, D_MODEL))
    with pytest.raises(ValueError, match="mask"):
        m(torch.randn(2, 5, D_MODEL), torch.ones(2, 4, dtype=torch.bool))
    longseq.mixers.set_debug(True)
    try:
        x = torch.randn(2, 5, D_MODEL)
        x[0, 1, 2] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            m(x)
    finally:
        longseq.mixers.set_debug(False)
    if not m.spec.step or not causal:
        with pytest.raises(ValueError, match="recurrent|causal"):
            m.init_state(2)


@pytest.mark.parametrize("name", longseq.mixers.names())
def test_spec_is_honest(name):
    s = longseq.mixers.spec(name)
    assert s.name == name and s.family and s.paper and s.complexity.startswith("O(")
    assert s.causal or s.bidirectional
    if not s.causal:
        with pytest.raises(ValueError, match="causal"):
            longseq.mixers.build(name, D_MODEL, num_heads=heads_for(name), causal=True, **options_for(name))
    if not s.bidirectional:
        with pytest.raises(ValueError, match="bidirectional"):
            longseq.mixers.build(name, D_MODEL, num_heads=heads_for(name), causal=False, **options_for(name))


def test_registry_errors():
    names = longseq.mixers.names()
    assert names == sorted(names) and "softmax" in names and "softmax_naive" in names
    with pytest.raises(ValueError, match="softmax"):
        longseq.mixers.build("no_such_mixer", 32)
    with pytest.raises(ValueError, match="unknown option.*'windw'.*rope="):
        longseq.mixers.build("softmax", 32, windw=3)
    with pytest.raises(ValueError, match="divisible"):
        longseq.mixers.build("softmax", 30, num_heads=4)
    with pytest.raises(ValueError, match="option rope must be true or false, got 'maybe'"):
        longseq.mixers.build("softmax", 32, rope="maybe")
    with pytest.raises(ValueError, match="option window must be a number"):
        longseq.mixers.build("local", 32, window="abc")


# ---------------------------------------------------------------------------- edge inputs (issue 26)
@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
def test_empty_batch_gives_empty_output(name, causal):
    """B = 0: an empty output of the input's shape and dtype (the base class answers before ``_forward``);
    with a recurrent state too."""
    m = make(name, causal, torch.float32).train()
    x = torch.randn(0, 5, D_MODEL, requires_grad=True)
    y = m(x)
    assert y.shape == (0, 5, D_MODEL) and y.dtype == x.dtype
    y.sum().backward()  # an empty graph is fine
    assert m(torch.randn(0, 5, D_MODEL), torch.ones(0, 5, dtype=torch.bool)).shape == (0, 5, D_MODEL)
    if m.spec.step and causal:
        y, state = m(torch.randn(0, 5, D_MODEL), return_state=True)
        assert y.shape == (0, 5, D_MODEL) and isinstance(state, dict)


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
def test_dtype_mismatch_is_a_clear_error(name, causal):
    """An input whose dtype differs from the parameters' is refused, naming both dtypes; under
    autocast (mixed precision) it is the autocast's business and accepted."""
    m = make(name, causal, torch.float32)
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=rf"input dtype {dt}.*parameters' dtype torch.float32"):
            m(torch.randn(2, 5, D_MODEL).to(dt))
    m64 = make(name, causal, torch.float64)
    with pytest.raises(ValueError, match=r"input dtype torch.float32.*torch.float64"):
        m64(torch.randn(2, 5, D_MODEL))


# An LSTM controller reads its input only through sigmoid/tanh gates of linear projections: +-inf
# there saturates the gates (sigmoid(inf) = 1, tanh(-inf) = -1), the limit of the function, not a
# silent repair, so an inf input may give finite outputs. NaN must still propagate.
SATURATING = {"lstm", "superposition_stack", "ns_rnn", "rns_rnn"}


@pytest.mark.parametrize("name,causal", CASES, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_inputs_propagate(name, causal, bad):
    """NaN/inf in one input position is never silently turned into finite numbers: the output at that
    position is non-finite (every mixer mixes a position with itself), and the other sequence of the
    batch is untouched. (NaN may also reach earlier positions of its own sequence: FFT convolutions
    and masked products multiply it by 0; that is loud, not silent, and not checked here.)"""
    m = make(name, causal, torch.float32)
    x = torch.randn(2, 9, D_MODEL)
    t = 4
    x[0, t, 3] = bad
    with torch.no_grad():
        y = m(x)
        ref = m(x[1:])
    if not (bad == float("inf") and name in SATURATING):
        assert not torch.isfinite(y[0, t]).all(), "non-finite input became finite output"
    assert torch.isfinite(y[1]).all()
    torch.testing.assert_close(y[1], ref[0], rtol=1e-5, atol=1e-6)
