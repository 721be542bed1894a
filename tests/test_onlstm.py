"""ON-LSTM (Shen et al. 2019): cumax properties, the mixer against a per-timestep reference
written from the paper's equations (values and gradients, float64), distances and trees."""

import pytest
import torch

import longseq
from longseq import trees
from longseq.mixers.onlstm import cumax


def test_cumax_monotone_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 30.0):
        z = torch.randn(50, 13, generator=g, dtype=torch.float64) * scale
        y = cumax(z)
        assert (y >= 0).all() and (y <= 1 + 1e-12).all()
        assert (y[:, 1:] - y[:, :-1] >= -1e-15).all()
        torch.testing.assert_close(y[:, -1], torch.ones(50, dtype=torch.float64))


def _reference(m, x):
    """The paper's eq. 1-14 one token and one neuron-chunk at a time, from the mixer's weights."""
    B, L, _ = x.shape
    H, C, Dm = m.hidden_size, m.chunk_size, m.n_chunks
    W, b, U = m.ih.weight, m.ih.bias, m.hh.weight
    rows = {"mf": slice(0, Dm), "mi": slice(Dm, 2 * Dm)}
    base = 2 * Dm
    for k, name in enumerate(("o", "c", "i", "f")):
        rows[name] = slice(base + k * H, base + (k + 1) * H)

    def pre(name, xt, h):
        s = rows[name]
        return xt @ W[s].T + b[s] + h @ U[s].T

    def cumax_loop(z):  # cumulative sum of softmax, written out
        p = torch.softmax(z, -1)
        out, acc = [], torch.zeros_like(p[:, 0])
        for k in range(p.shape[-1]):
            acc = acc + p[:, k]
            out.append(acc)
        return torch.stack(out, -1)

    h = torch.zeros(B, H, dtype=x.dtype)
    c = torch.zeros(B, H, dtype=x.dtype)
    ys, ds = [], []
    for t in range(L):
        xt = x[:, t]
        f = torch.sigmoid(pre("f", xt, h))
        i = torch.sigmoid(pre("i", xt, h))
        o = torch.sigmoid(pre("o", xt, h))
        chat = torch.tanh(pre("c", xt, h))
        fm = cumax_loop(pre("mf", xt, h))  # [B, Dm]
        im = 1 - cumax_loop(pre("mi", xt, h))
        fmn = fm.repeat_interleave(C, dim=1)  # chunk k -> neurons kC..kC+C-1
        imn = im.repeat_interleave(C, dim=1)
        w = fmn * imn
        fh = f * w + (fmn - w)
        ih = i * w + (imn - w)
        c = fh * c + ih * chat
        h = o * torch.tanh(c)
        ys.append(h @ m.out.weight.T + m.out.bias)
        ds.append(Dm - fm.sum(-1))
    return torch.stack(ys, 1), torch.stack(ds, 1)


def test_onlstm_equals_reference_values_and_gradients():
    torch.manual_seed(0)
    m = longseq.mixers.build("onlstm", 10, causal=True, hidden_size=12, chunk_size=3).double()
    x = torch.randn(2, 9, 10, dtype=torch.float64, requires_grad=True)
    y = m(x)
    y_ref, d_ref = _reference(m, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(m.distances(x.detach()), d_ref.detach(), rtol=1e-12, atol=1e-12)
    proj = torch.randn_like(y)
    g1 = torch.autograd.grad((y * proj).sum(), [x, m.hh.weight, m.ih.weight])
    g2 = torch.autograd.grad((y_ref * proj).sum(), [x, m.hh.weight, m.ih.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert ((d_ref >= 0) & (d_ref <= m.n_chunks)).all()


def test_trees_from_distances():
    d = torch.tensor([[0.0, 3.0, 1.0, 2.0, 9.0]])
    got = longseq.mixers.spec("onlstm").cls.trees_from_distances(d, [4])
    assert got == [trees.split_by_distance([3.0, 1.0, 2.0])]
    assert got[0][0] == ((0, 4),) and ((0, 1),) in got[0]


def test_bad_options():
    with pytest.raises(ValueError, match="chunk_size"):
        longseq.mixers.build("onlstm", 10, causal=True, hidden_size=10, chunk_size=3)
    with pytest.raises(ValueError, match="no bidirectional mode"):
        longseq.mixers.build("onlstm", 10, causal=False)
