"""longseq.ops.h3.h3_core (H3's training path, projections included, hand-written in-place backward
for head_dim 1, autograd on the recomputed group otherwise) against its naive twin ``h3_core_naive``
(Algorithm 1 from the unrolled FIR and diagonal-SSM references), float64: values and the gradients
of ``x``, the stacked projections, the shift-SSM taps, the modes, ``D`` and the output projection
(rtol 1e-8 / atol 1e-10), odd lengths not a multiple of the chunk, several head groups, a second
backward through a retained graph (it recomputes Q, K, V from x); bfloat16 raises a ValueError naming the dtype
error (the mixer sends half-precision inputs to its plain path)."""

import pytest
import torch

import longseq.ops.h3.fused as h3_fused
from longseq.ops.h3 import h3_core, h3_core_naive
from longseq.ops.h3.fused import _H3Core

from .twins import bf16_smoke, check_twin


def _inputs(L, d=6, hd=1, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    nh = d // hd
    log_z = torch.complex(-0.5 * torch.rand(nh, N // 2, generator=g, dtype=torch.float64) - 0.01, r(nh, N // 2))
    w = torch.randn(nh, N // 2, generator=g, dtype=torch.complex128)
    return [r(2, L, d), r(3 * d, d) / d**0.5, r(3 * d), r(d, N), w, log_z, r(nh), r(d, d) / d**0.5, r(d)]


@pytest.mark.parametrize("hd", [1, 2])
@pytest.mark.parametrize("L,chunk", [(1, 4), (23, 8), (70, 64)])
def test_h3_core_twin(hd, L, chunk, monkeypatch):
    monkeypatch.setattr(h3_fused, "_heads_per_group", lambda hd, batch, L: 2)  # several head groups
    check_twin(
        lambda *a: h3_core(*a, hd, chunk),
        lambda *a: h3_core_naive(*a, hd),
        _inputs(L, hd=hd, seed=L),
        rtol=1e-8,
        atol=1e-10,
        functions=(_H3Core,),
    )


def test_h3_core_bf16_smoke():
    out = bf16_smoke(lambda *a: h3_core(*a, 1, 8), _inputs(16))
    assert isinstance(out, ValueError) and "dtype" in str(out), out
