"""The ``fno`` token mixer against the DFT-matrix reference (float64, values and gradients)."""

import pytest
import torch

import longseq
from longseq.operators.naive import spectral_conv1d_naive


def _reference(m, x):
    """Per head: the naive Fourier layer on channels-first [B, Dh, L]."""
    B, L, D = x.shape
    H, Dh = m.num_heads, m.head_dim
    w = torch.view_as_complex(m.weight)  # [H, Dh, Dh, modes]
    outs = [
        spectral_conv1d_naive(x[..., h * Dh : (h + 1) * Dh].transpose(1, 2), w[h], m.modes).transpose(1, 2)
        for h in range(H)
    ]
    return torch.cat(outs, dim=-1)


@pytest.mark.parametrize("L", [1, 2, 9, 16, 31])
@pytest.mark.parametrize("heads,modes", [(1, 3), (2, 8), (4, 20)])
def test_fno_mixer_matches_dft(L, heads, modes):
    torch.manual_seed(L + 10 * heads)
    m = longseq.mixers.build("fno", 8, num_heads=heads, modes=modes).double()
    with torch.no_grad():
        m.weight.normal_()
    x = torch.randn(3, L, 8, dtype=torch.float64, requires_grad=True)
    y = m(x)
    x2 = x.detach().clone().requires_grad_(True)
    ref = _reference(m, x2)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, m.weight), g)
    rx, rw = torch.autograd.grad(ref, (x2, m.weight), g)
    torch.testing.assert_close(gx, rx, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-10, atol=1e-12)


def test_fno_mixer_padding_groups_by_length():
    torch.manual_seed(0)
    m = longseq.mixers.build("fno", 8, num_heads=2, modes=4).double()
    x = torch.randn(4, 12, 8, dtype=torch.float64)
    lengths = [12, 5, 12, 0]
    mask = torch.arange(12)[None] < torch.tensor(lengths)[:, None]
    y = m(x, mask)
    for i, l in enumerate(lengths):
        if l:
            torch.testing.assert_close(y[i, :l], m(x[i : i + 1, :l])[0], rtol=1e-12, atol=1e-12)
        assert (y[i, l:] == 0).all()


def test_fno_mixer_errors():
    with pytest.raises(ValueError, match="bidirectional only"):
        longseq.mixers.build("fno", 8, causal=True)
    with pytest.raises(ValueError, match="modes"):
        longseq.mixers.build("fno", 8, modes=0)
    m = longseq.mixers.build("fno", 8)
    mask = torch.tensor([[False, True, True]])
    with pytest.raises(ValueError, match="prefix"):
        m(torch.randn(1, 3, 8), mask)


def test_fno_in_a_classifier():
    from longseq.models import SequenceClassifier

    clf = SequenceClassifier(
        vocab_size=16, num_classes=3, d_model=16, n_layers=2, mixer="fno", num_heads=2, mixer_options={"modes": 4}
    )
    ids = torch.randint(0, 16, (2, 10))
    out = clf(ids, torch.ones(2, 10, dtype=torch.bool))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
