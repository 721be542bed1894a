"""longseq.ops.cauchy (S4's Cauchy sums and Woodbury + irfft step) against its naive twins, float64:

* :func:`woodbury_irfft` (hand-written FFT backward) against ``woodbury_irfft_naive`` (autograd of the
  plain expression), broadcasting inputs: values and gradients rtol 1e-10, a second backward
  through a retained graph; bfloat16 raises torch's "Unsupported dtype BFloat16" (no bfloat16 FFT;
  the S4 mixer computes its kernel in float32 for half inputs);
* :func:`cauchy_roots_of_unity` (folded Vandermonde + rfft) against ``cauchy_naive`` (the direct sum
  over states at the roots of unity), rtol 1e-9;
* :func:`vandermonde_real` against the direct sum ``2 Re sum W a^m``, values and gradients, rtol 1e-10.
"""

import pytest
import torch

from longseq.ops.cauchy import (
    cauchy_naive,
    cauchy_roots_of_unity,
    roots_of_unity,
    vandermonde_real,
    woodbury_irfft,
    woodbury_irfft_naive,
)
from longseq.ops.cauchy.fused import _WoodburyIrfft

from .twins import bf16_smoke, check_twin

H = 3


@pytest.mark.parametrize("L", [1, 7, 16, 33])
def test_woodbury_irfft_twin(L):
    torch.manual_seed(L)
    g = [torch.randn(*shape, L, dtype=torch.float64) for shape in ((3, H), (1, H), (3, H), (H,))]
    check_twin(
        lambda *g: woodbury_irfft(*g, L),
        lambda *g: woodbury_irfft_naive(*g, L),
        g,
        rtol=1e-10,
        atol=1e-11,
        functions=(_WoodburyIrfft,),
    )


def test_woodbury_irfft_bf16_smoke():
    """bfloat16 sequences: no bfloat16 FFT on the CPU, so the op raises torch's own clear error."""
    g = [torch.randn(H, 16) for _ in range(4)]
    out = bf16_smoke(lambda *g: woodbury_irfft(*g, 16), g)
    assert isinstance(out, RuntimeError) and "BFloat16" in str(out), out  # "Unsupported dtype BFloat16"


@pytest.mark.parametrize("L", [1, 17, 64, 489])
def test_cauchy_fast_equals_naive(L):
    torch.manual_seed(L)
    mu = torch.complex(-torch.rand(H, 4, dtype=torch.float64) - 1e-3, torch.randn(H, 4, dtype=torch.float64) * 3)
    dt = torch.rand(H, dtype=torch.float64) + 1e-3
    v = torch.randn(2, H, 4, dtype=torch.complex128)
    torch.testing.assert_close(
        cauchy_roots_of_unity(v, mu, dt, L),
        cauchy_naive(v, mu, dt, roots_of_unity(L, torch.complex128)),
        rtol=1e-9,
        atol=1e-9,
    )


@pytest.mark.parametrize("L", [1, 17, 100, 489])
def test_vandermonde_real_values_and_grads(L):
    """The chunked GEMM Vandermonde (own backward) against the direct sum 2 Re Σ W ā^m, float64."""
    torch.manual_seed(L)
    W = torch.randn(2, 3, H, 4, dtype=torch.complex128, requires_grad=True)
    log_a = torch.complex(
        -torch.rand(H, 4, dtype=torch.float64) * 0.1, torch.randn(H, 4, dtype=torch.float64)
    ).requires_grad_(True)
    g = vandermonde_real(W, log_a, L)
    ref = 2 * (W[..., None] * torch.exp(log_a[..., None] * torch.arange(L, dtype=torch.float64))).sum(-2).real
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(g)
    for a, b in zip(torch.autograd.grad((g * w).sum(), [W, log_a]), torch.autograd.grad((ref * w).sum(), [W, log_a])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
