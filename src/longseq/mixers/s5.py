"""S5: one MIMO diagonal state space shared by all channels, run with a parallel scan.

Smith, Warrington, Linderman (ICLR 2023), "Simplified State Space Layers for Sequence Modeling".

Continuous system (S5 eq. 1, in the eigenbasis of the state matrix, Section 3.2)::

    x'(t) = Λ x(t) + B̃ u(t),      y(t) = C̃ x(t) + D u(t)     (x ∈ C^P, u, y ∈ R^H)

Discretisation: zero-order hold with one timescale per state (Section 4.3, eq. 6 / Appendix
B.1)::

    Λ̄ = exp(Λ Δ),     B̄ = Λ^{-1} (Λ̄ - I) B̃

Recurrence ``x_k = Λ̄ x_{k-1} + B̄ u_k``, ``y_k = 2 Re(C̃ x_k) + D u_k`` (conjugate symmetry,
Section 4.1 / Appendix D.2: only the ``P/2`` eigenvalues with positive imaginary part are kept and
the output is twice the real part). It is computed with :func:`longseq.ops.scan.chunk.linear_scan`:
``Λ̄`` is constant in time, so inside chunks of ``chunk_size`` steps the states are one batched
complex matmul with the Toeplitz matrix of powers ``Λ̄^{t-s}``, and only the chunk-end states go
through the parallel scan of the associative operator of Section 2.2 (``O(L · chunk_size)`` work,
``O(L/chunk_size)`` sequential depth; identical results to the plain scan).

Initialisation (Section 4.3, Appendix B.1.1):
* ``Λ``: eigenvalues of the normal part of HiPPO-LegS ("HiPPO-N", ``Re Λ = -1/2``) of size
  ``P/J``, repeated ``J = blocks`` times (block-diagonal init); ``V`` block-diagonal.
* ``B̃ = V^{-1} B`` with ``B`` real lecun-normal ``[P, H]``; ``C̃ = C V`` with ``C`` real
  truncated standard normal ``[H, P]`` (the official default ``trunc_standard_normal``);
  ``D ~ N(0, 1)``.
* ``log Δ ~ U[log dt_min, log dt_max]`` per state (``dt_min = 1e-3``, ``dt_max = 1e-1``).
* ``Re Λ`` is clipped to ``<= -1e-4`` when used (the official ``clip_eigs`` option), so the
  system stays stable whatever the learning rate does.

Decisions on points the paper leaves open or sets per task:
* Defaults ``d_state = P = 64`` (32 complex states), ``blocks = J = 4``.
* Bidirectional (Appendix: official ``bidirectional``): the same ``Λ̄, B̄`` scanned forwards and
  backwards with two output matrices, ``y = 2 Re(C̃_1 x^→ + C̃_2 x^←) + D u``.
* ``activation`` after the SSM, as in the official ``SequenceLayer``: ``half_glu1`` (default of
  the official training script: ``g = GELU(y); out = g * sigmoid(W g)``), ``half_glu2``
  (``out = y * sigmoid(W GELU(y))``), ``gelu`` (``GELU(y)``) or ``none``. The two gated forms run
  in row blocks of ``2^19 / d`` rows (2048 at d = 256; 2 MB transients, which the allocator reuses
  where 4 MB ones kept adding resident memory) and keep only ``y`` for the backward
  (:func:`longseq.ops.gelu_linear.gelu_linear`).
* Without a state (training, bidirectional) the SSM is one autograd function (:func:`longseq.ops.s5.s5_ssm`):
  ``y`` is a single ``[B, L, H]`` buffer (``D u`` plus the readouts added by ``addmm``), only the
  states are saved, and the backward runs the adjoint scans itself and writes ``du`` into one
  buffer. With a state (``forward(state=...)``/``return_state``) the same recurrence runs through
  :func:`longseq.ops.scan.chunk.linear_scan` under autograd; the two are tested equal. The single
  function about halved the memory peak at 16K and was no slower (benchmarks/notes/2026-12-08-docstring-timings.md).
* ``Λ`` (real and imaginary parts), ``B̃`` and ``log Δ`` get their own learning rate ``ssm_lr``
  (default 1e-3) and no weight decay (Appendix G, "SSM parameters"); ``C̃``, ``D``, ``W`` use the
  global settings.
* The SSM runs in float32 (complex64) when the input is float16/bfloat16 (no complex half type).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gelu_linear import gelu_linear
from ..ops.s5 import readout_matrix as _readout_matrix
from ..ops.s5 import rows_view as _rows
from ..ops.s5 import s5_ssm
from ..ops.s5 import ssm_input as _input
from ..ops.scan.chunk import linear_scan
from ..optim import set_optim
from ..ssm.hippo import legs_normal_eig
from ..utils.validate import check_choice, check_int
from .base import Mixer, register

ACTIVATIONS = ("half_glu1", "half_glu2", "gelu", "none")


def s5_flops(L: int, d: int, h: int, causal: bool, d_state: int = 64) -> float:
    P2 = d_state // 2
    dirs = 1 if causal else 2
    per_token = 4 * d * P2 + dirs * (4 * d * P2 + 8 * P2 * math.log2(64)) + 2 * d * d
    return float(L * per_token)


def block_hippo_n(d_state: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-diagonal HiPPO-N init: ``Λ [P/2]`` and ``V [P, P/2]`` (complex128, conj-symmetric half)."""
    bs = d_state // blocks
    Lam, V = legs_normal_eig(bs)
    Lam, V = Lam[: bs // 2], V[:, : bs // 2]  # positive imaginary parts
    return Lam.repeat(blocks), torch.block_diag(*([V] * blocks))


def _c(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(t.contiguous())


def _gate_rows(d: int) -> int:
    return max(64, (1 << 19) // d)  # ~512K elements (2 MB float32) per [rows, d] buffer


@register(
    "s5",
    family="state space",
    paper="Smith, Warrington, Linderman 2023, Simplified State Space Layers for Sequence Modeling (S5)",
    complexity="O(N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=s5_flops,
    heads=False,
    renamed={"chunk": "chunk_size"},
)
class S5(Mixer):
    """MIMO diagonal SSM (``H -> H`` through ``P`` states) with ZOH and a parallel scan."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        d_state: int = 64,
        blocks: int = 4,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        activation: str = "half_glu1",
        ssm_lr: float = 1e-3,
        chunk_size: int = 64,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_int("blocks", blocks, min=1, owner="s5")
        if not isinstance(d_state, int) or d_state < 2 or d_state % (2 * blocks) != 0:
            raise ValueError(f"s5: d_state must be a positive multiple of 2*blocks={2 * blocks}, got {d_state!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"s5: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        check_choice("activation", activation, ACTIVATIONS, owner="s5")
        check_int("chunk_size", chunk_size, min=2, owner="s5")
        if chunk_size & (chunk_size - 1):
            raise ValueError(f"s5: chunk_size must be a power of two >= 2, got {chunk_size}")
        H, P = d_model, d_state
        self.d_state, self.activation, self.chunk = P, activation, chunk_size
        dirs = 1 if causal else 2

        Lam, V = block_hippo_n(P, blocks)  # [P/2], [P, P/2]
        Vinv = V.conj().T  # V is unitary: V^{-1} = V*; [P/2, P]
        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)  # lecun normal
        C = nn.init.trunc_normal_(torch.empty(dirs, H, P, dtype=torch.float64), std=1.0, a=-2.0, b=2.0)
        self.Lambda_re = nn.Parameter(Lam.real.float())  # [P/2]
        self.Lambda_im = nn.Parameter(Lam.imag.float())  # [P/2]
        self.B = nn.Parameter(torch.view_as_real(Vinv @ B.to(V.dtype)).float())  # [P/2, H, 2]
        self.C = nn.Parameter(torch.view_as_real(C.to(V.dtype) @ V).float())  # [dirs, H, P/2, 2]
        self.D = nn.Parameter(torch.randn(H))  # [H]
        log_dt = torch.rand(P // 2) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)  # [P/2]
        for p in (self.Lambda_re, self.Lambda_im, self.B, self.log_dt):
            set_optim(p, lr=ssm_lr, weight_decay=0.0)
        self.gate = nn.Linear(H, H) if activation.startswith("half_glu") else None

    # ------------------------------------------------------------------ SSM pieces
    def discrete(self, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """ZOH (eq. 6): ``Λ̄ [P/2]`` and ``B̄ [P/2, H]`` (complex of ``dtype``)."""
        re = self.Lambda_re.to(dtype).clamp(max=-1e-4)
        Lam = torch.complex(re, self.Lambda_im.to(dtype))
        dt = self.log_dt.to(dtype).exp()
        Lbar = torch.exp(Lam * dt)
        Bbar = ((Lbar - 1) / Lam)[:, None] * _c(self.B.to(dtype))
        return Lbar, Bbar

    def _compute_dtype(self, x):
        return torch.float64 if x.dtype == torch.float64 else torch.float32

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        if self.activation.startswith("half_glu"):
            gate = "output" if self.activation == "half_glu1" else "input"
            return gelu_linear(y, self.gate, gate=gate, rows=_gate_rows(y.shape[-1]))
        if self.activation == "gelu":
            return F.gelu(y)
        return y

    def _readout(self, h: torch.Tensor, direction: int, dtype) -> torch.Tensor:
        """``2 Re(C̃ h)`` for h ``[..., P/2]`` complex -> ``[..., H]``."""
        return (_rows(h) @ _readout_matrix(self.C[direction].to(dtype))).view(*h.shape[:-1], -1)

    # ------------------------------------------------------------------ Mixer API
    def _forward(self, x, mask, state, return_state):
        dt = self._compute_dtype(x)
        u = x.to(dt)  # [B, L, H]
        Lbar, Bbar = self.discrete(dt)
        if state is None and not return_state:  # the memory-lean fused path
            y = s5_ssm(u, Lbar, Bbar, self.C.to(dt), self.D.to(dt), self.chunk)
            return self._post(y.to(x.dtype)), None
        Bu = _input(u, Bbar)  # [B, L, P/2]
        h0 = None if state is None else state["h"]
        h, h_last = linear_scan(Lbar, Bu, h0, chunk=self.chunk)  # [B, L, P/2]
        y = self._readout(h, 0, dt)
        if not self.causal:
            h_rev, _ = linear_scan(Lbar, Bu, reverse=True, chunk=self.chunk)
            y = y + self._readout(h_rev, 1, dt)
        y = self._post(torch.addcmul(y, self.D.to(dt), u).to(x.dtype))  # y + D u, one [B, L, H] buffer
        return y, ({"h": h_last} if return_state else None)

    def _step(self, x_t, state):
        dt = self._compute_dtype(x_t)
        u = x_t.to(dt)  # [B, H]
        Lbar, Bbar = self.discrete(dt)
        h = Lbar * state["h"] + u.to(Bbar.dtype) @ Bbar.T  # [B, P/2]
        y = self._post((self._readout(h, 0, dt) + self.D.to(dt) * u).to(x_t.dtype))
        return y, {"h": h}

    def _init_state(self, batch_size, device, dtype):
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        return {"h": torch.zeros(batch_size, self.d_state // 2, dtype=cdt, device=device)}

    def state_size(self, seq_len: int) -> int:
        return self.d_state  # P/2 complex numbers

    def extra_repr(self) -> str:
        return super().extra_repr() + f", d_state={self.d_state}, activation={self.activation}"
