"""``grn`` (S-LSTM, Zhang et al. 2018) against a per-node loop written from the paper's equations,
in float64: values and gradients (input and every parameter), with and without padding."""

import pytest
import torch

import longseq
from reference import assert_matches_reference

torch.set_num_threads(1)
F64 = dict(rtol=1e-10, atol=1e-12)


def loop_reference(m, x, mask):
    """One node at a time: every token node i and the sentence node g, for T steps."""
    B, L, D = x.shape
    Wxi, Ux, bx, Vg = m.word_xi.weight, m.word_x.weight, m.word_x.bias, m.word_g.weight
    Wsg, Ush, bsh, Uh, bh = m.sent_g.weight, m.sent_hbar.weight, m.sent_hbar.bias, m.sent_h.weight, m.sent_h.bias
    w = m.window
    outs = []
    for b in range(B):
        real = [i for i in range(L) if mask is None or bool(mask[b, i])]
        xb = [x[b, i] if i in real else torch.zeros(D, dtype=x.dtype) for i in range(L)]
        h = list(xb)
        c = list(xb)
        g = sum(xb[i] for i in real) / max(len(real), 1)
        cg = g
        zero = torch.zeros(D, dtype=x.dtype)

        def at(seq, j):
            return seq[j] if 0 <= j < L and j in real else zero

        for t in range(m.steps):
            h2, c2 = [], []
            for i in range(L):
                if i not in real:
                    h2.append(zero)
                    c2.append(zero)
                    continue
                xi = torch.cat([at(h, j) for j in range(i - w, i + w + 1)])
                pre = Wxi @ xi + Ux @ xb[i] + bx + Vg @ g
                gi, gl, gr, gf, gs, go = [pre[k * D : (k + 1) * D].sigmoid() for k in range(6)]
                u = torch.tanh(pre[6 * D :])
                Z = gi.exp() + gl.exp() + gr.exp() + gf.exp() + gs.exp()
                ci = (
                    gl.exp() * at(c, i - 1) + gf.exp() * c[i] + gr.exp() * at(c, i + 1) + gs.exp() * cg + gi.exp() * u
                ) / Z
                c2.append(ci)
                h2.append(go * torch.tanh(ci))
            if t == m.steps - 1:
                h = h2
                break
            hbar = sum(h[i] for i in real) / max(len(real), 1)
            sg = Wsg @ g
            sh = Ush @ hbar + bsh
            fg = (sg[:D] + sh[:D]).sigmoid()
            og = (sg[D : 2 * D] + sh[D:]).sigmoid()
            num, den = fg.exp() * cg, fg.exp()
            for i in real:
                fi = (sg[2 * D :] + Uh @ h[i] + bh).sigmoid()
                num = num + fi.exp() * c[i]
                den = den + fi.exp()
            cg = num / den
            g = og * torch.tanh(cg)
            h, c = h2, c2
        outs.append(torch.stack([m.out_proj(hi) if i in real else zero for i, hi in enumerate(h)]))
    return torch.stack(outs)


@pytest.mark.parametrize("window,steps", [(1, 2), (1, 3), (2, 2)])
@pytest.mark.parametrize("padded", [False, True])
def test_grn_equals_loop_reference(window, steps, padded):
    torch.manual_seed(window * 10 + steps)
    m = longseq.mixers.build("grn", 8, steps=steps, window=window).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    mask = None
    if padded:
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, 6:] = False
    assert_matches_reference(m, loop_reference, x, mask, **F64)


def test_grn_window_longer_than_sequence_and_one_token():
    torch.manual_seed(0)
    m = longseq.mixers.build("grn", 4, steps=2, window=3).double()
    for L in (1, 2):
        x = torch.randn(1, L, 4, dtype=torch.float64)
        assert_matches_reference(m, loop_reference, x, None, **F64)


def test_grn_reaches_across_the_sequence_through_the_sentence_node():
    """One step with window 1: token 0 sees token L-1 only through g (which reads mean(x) at g^0)."""
    torch.manual_seed(0)
    m = longseq.mixers.build("grn", 8, steps=1, window=1).double()
    x = torch.randn(1, 20, 8, dtype=torch.float64, requires_grad=True)
    m(x)[0, 0].sum().backward()
    assert x.grad[0, 19].abs().sum() > 0


def test_grn_bad_options():
    with pytest.raises(ValueError, match="steps"):
        longseq.mixers.build("grn", 8, steps=0)
    with pytest.raises(ValueError, match="window"):
        longseq.mixers.build("grn", 8, window=0)
    with pytest.raises(ValueError, match="causal"):
        longseq.mixers.build("grn", 8, causal=True)
