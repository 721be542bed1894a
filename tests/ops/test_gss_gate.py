"""longseq.ops.gss_gate.gated_out (GSS's gated branch in row chunks, inputs-only backward) against its
naive twin ``gated_out_naive`` (every ``[R, F]`` tensor materialised, autograd), float64: values and
the gradients of ``x, y1`` and all weights and biases (rtol 1e-10), rows not a multiple of the
chunk, a second backward through a retained graph, the no-grad forward, bfloat16 smoke run."""

import pytest
import torch

import longseq.ops.gss_gate.fused as gss_gate
from longseq.ops.gss_gate import gated_out, gated_out_naive
from longseq.ops.gss_gate.fused import _GatedOut

from .twins import bf16_smoke, check_twin


def _inputs(R=23, E=6, H=3, F=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    y1 = torch.cat([r(R, H), torch.ones(R, 1, dtype=torch.float64)], -1)
    return [r(R, E), y1, r(F, E), r(F), r(F, H + 1), r(E, F), r(E)]


@pytest.mark.parametrize("rows", [7, 1 << 20])
def test_gated_out_twin(rows, monkeypatch):
    monkeypatch.setattr(gss_gate, "_chunk_rows", lambda F_dim: rows)
    check_twin(gated_out, gated_out_naive, _inputs(seed=rows), rtol=1e-10, atol=1e-10, functions=(_GatedOut,))
    with torch.no_grad():  # the forward without saving
        torch.testing.assert_close(gated_out(*_inputs()), gated_out_naive(*_inputs()), rtol=1e-10, atol=1e-10)


def test_gated_out_bf16_smoke():
    assert bf16_smoke(gated_out, _inputs()) == "runs"
