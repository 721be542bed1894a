"""Diagonal state-space mixers: S4D and DSS.

``s4d`` — Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal
State Space Models" (S4D). Every channel ``h`` of the ``d_model`` channels is its own
single-input single-output SSM of state size ``N = d_state`` (S4D has no heads, every
channel is one: registered with ``heads=False``, so ``num_heads`` other than 1 is refused). Continuous SSM (S4D eq. (1))::

    x'(t) = A x(t) + B u(t),     y(t) = C x(t) + D u(t),     A = diag(A_0 .. A_{N/2-1}) complex

kept as N/2 conjugate-pair modes (y = 2 Re(C x)), discretised with ``disc`` (``zoh``, eq. (5),
default; or ``bilinear``), computed as the causal convolution ``y = K * u + D u`` with the
Vandermonde kernel ``K_l = 2 Re sum_n C_n dB_n dA_n^l`` (eq. (6)) — by FFT or in chunks, see
``method`` below. Initialisations ``init`` in ``lin`` (S4D-Lin, default — the
teaching module of the S4 repository uses it), ``inv``, ``legs``, ``real``
(:mod:`longseq.ssm.init`); ``B = 1`` (LegS: the eigenbasis B), ``C ~ CN(0,1)``, ``D ~ N(0,1)``,
``log dt ~ U[log dt_min, log dt_max]`` per channel. A, B and dt train with their own
learning rate ``ssm_lr`` (default 1e-3) and no weight decay.

Layer (as the S4D reference module): ``y = GLU(W (GELU(SSM(u) + D u)))`` with ``W: d -> 2d``;
the position-wise part runs in row blocks and recomputes GELU and ``W`` in the backward
(:func:`longseq.ops.gelu_linear.gelu_linear`), so the layer keeps one ``[L, d]`` activation instead of five.

Fast paths (option ``method``; both tested equal to the unrolled recurrence in float64):

* ``"fft"`` — the paper's computation: FFT convolution of length >= 2L
  (:mod:`longseq.ops.fftconv.fft`), O(L log L).
* ``"chunked"`` — the same SSM in its block form, chunks of 64 positions: a Toeplitz matmul
  inside each chunk plus the N/2 modes' state passed between chunks
  (:mod:`longseq.ops.diag_ssm.chunk`), O(L) work, only the input kept for the backward.

Decision (from timings at L = 16K, d_model 256, fwd+bwd, on CPU; the figures and how they were
taken: benchmarks/notes/2026-12-08-docstring-timings.md): for s4d (N/2 = 32 modes) chunked was
faster than fft, so ``"chunked"`` is the default for ``s4d``. For dss (N = 64 modes: the
per-chunk coefficient matrices ``[H, T, 4N]`` are twice as large) chunked was faster in one
process but used more memory, and the benchmark harness had fft ahead on both, so ``dss`` keeps
``"fft"`` as its default. Without a state, dss's fft path
builds the kernels a channel group at a time inside the convolution and rebuilds them in the backward
(:func:`longseq.ops.fftconv.fft.grouped_kernel_conv`): no ``[2, H, L]`` kernel or kernel gradient is ever
held, input and output stay ``[B, L, d]`` (no transposed copies), and the GELU/GLU output runs in
blocks of 2048 rows. This about halved the memory peak at 16K, for one more Vandermonde
evaluation per step (a small time cost; figures in benchmarks/notes/2026-12-08-docstring-timings.md).

Bidirectional mode (S4 repository): two kernels sharing A, B, dt with separate C — one over
the past including the current position, one over the strict future (fftconv eq. (2)).

``dss`` — Gupta, Gu, Berant 2022, "Diagonal State Spaces are as Effective as Structured State
Spaces" (DSS), Proposition 1: the same layer with the DSS kernel (``variant="exp"``, default, or
``"softmax"`` normalised over ``l_max`` positions — see :class:`longseq.ssm.kernels.DSSKernel`),
``d_state = N`` complex modes (DSS's ``N``; default 64) initialised with skew-HiPPO, no factor 2
(it is absorbed in ``W``). DSS's own layer has the same GELU + output projection structure; we
use the GLU output of S4D for both so that the two differ only in the kernel.

Recurrent mode (causal, S4D eq. (4)): ``x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k) + D u_k``,
O(N) per token; ``forward(state=...)`` absorbs a whole block at once (block FFT + state
Vandermonde product). The state is stored divided by ``dB`` (``x / dB``), complex ``[B, H, N/2]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.diag_ssm.chunk import DEFAULT_CHUNK
from ..ops.fftconv.fft import fast_fft_size, grouped_kernel_conv, ssm_apply
from ..ops.gelu_linear import gelu_linear
from ..ssm.kernels import DiagSSMKernel, DSSKernel
from ..utils.validate import check_choice
from .base import Mixer, register


def ssm_conv_flops(L: int, channels: float, modes: int) -> float:
    """Kernel (Vandermonde, ~8 N L real flops per channel) + three real FFTs of size n + product."""
    n = fast_fft_size(2 * L)
    return channels * (8.0 * modes * L + 3 * 2.5 * n * math.log2(max(n, 2)) + 6.0 * n)


def chunked_flops(L: int, channels: float, modes: int, directions: int = 1, T: int = DEFAULT_CHUNK) -> float:
    """:func:`longseq.ops.diag_ssm.chunk.diag_ssm_chunked`: per position a ``T``-tap Toeplitz product and
    two ``2C``-wide state products (``C = modes * directions``)."""
    return channels * L * (2.0 * min(T, L) + 8.0 * modes * directions)


def _s4d_flops(L, d, h, causal):
    return chunked_flops(L, d, 32, 1 if causal else 2) + 2.0 * L * d * 2 * d


class _DiagonalSSM(Mixer):
    """Shared body: kernel module in ``self.kernel``; ``y = GLU(W GELU(SSM(u) + D u))``."""

    def _setup(self, kernel: nn.Module, method: str):
        check_choice("method", method, ("chunked", "fft"), owner=self.spec.name)
        self.kernel, self.method = kernel, method
        self.D = nn.Parameter(torch.randn(self.d_model))
        self.out = nn.Linear(self.d_model, 2 * self.d_model)

    def ssm(self, u: torch.Tensor, state=None, return_state: bool = False):
        """The SSM with skip: ``u [B, H, L]`` -> ``(SSM(u) + D u [B, H, L], state)``."""
        return ssm_apply(self.kernel, u, self.D, self.causal, state, return_state=return_state, method=self.method)

    def _forward(self, x, mask, state, return_state):
        y, state = self.ssm(x.transpose(1, 2), None if state is None else state["x"], return_state)
        y = gelu_linear(y.transpose(1, 2), self.out, glu=True)  # [B, L, d]
        return y, ({"x": state} if return_state else None)

    def _init_state(self, batch_size, device, dtype):
        if not getattr(self.kernel, "recurrent", True):
            raise ValueError(f"{self.spec.name}: this kernel variant has no recurrent form (use variant='exp')")
        w, _ = self.kernel.modes()
        return {"x": torch.zeros(batch_size, *w.shape[1:], dtype=w.dtype, device=device)}

    def state_size(self, seq_len):
        return 2 * self.kernel.modes()[0][0].numel()


@register(
    "s4d",
    family="state space",
    paper="Gu, Gupta, Goel, Ré 2022, On the Parameterization and Initialization of Diagonal State Space Models",
    complexity="O(N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=_s4d_flops,
    heads=False,
    renamed={"lr": "ssm_lr"},
)
class S4D(_DiagonalSSM):
    """S4D layer (see the module docstring). ``d_state`` is the real state size N (N/2 modes)."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        d_state: int = 64,
        init: str = "lin",
        disc: str = "zoh",
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float | None = 1e-3,
        method: str = "chunked",
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        self._setup(
            DiagSSMKernel(
                d_model,
                d_state,
                channels=1 if causal else 2,
                init=init,
                disc=disc,
                dt_min=dt_min,
                dt_max=dt_max,
                lr=ssm_lr,
            ),
            method,
        )


def _dss_flops(L, d, h, causal):
    return ssm_conv_flops(L, d * (1 if causal else 2), 64) + 2.0 * L * d * 2 * d


@register(
    "dss",
    family="state space",
    paper="Gupta, Gu, Berant 2022, Diagonal State Spaces are as Effective as Structured State Spaces",
    complexity="O(N log N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=_dss_flops,
    heads=False,
    renamed={"lr": "ssm_lr"},
)
class DSS(_DiagonalSSM):
    """DSS layer (see the module docstring). ``d_state`` is the number N of complex modes."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        d_state: int = 64,
        variant: str = "exp",
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float | None = 1e-3,
        method: str = "fft",
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        self._setup(
            DSSKernel(
                d_model,
                d_state,
                channels=1 if causal else 2,
                variant=variant,
                l_max=l_max,
                dt_min=dt_min,
                dt_max=dt_max,
                lr=ssm_lr,
            ),
            method,
        )

    def _forward(self, x, mask, state, return_state):
        if self.method != "fft" or state is not None or return_state:
            return super()._forward(x, mask, state, return_state)
        # stateless FFT path: kernels built per channel group inside the convolution, in x's layout;
        # 2048-row GLU blocks (2-4 MB transients) are reused by the allocator where 4096-row ones
        # (the default) were not, which lowers the RSS peak (benchmarks/notes/2026-12-08-docstring-timings.md)
        y = grouped_kernel_conv(x, self.kernel.kernel_slice, self.kernel.kernel_params(), self.D)  # [B, L, d]
        return gelu_linear(y, self.out, glu=True, rows=2048), None
