"""H3 — Fu, Dao, Saab, Thomas, Rudra, Ré 2023, "Hungry Hungry Hippos: Towards Language Modeling
with State Space Models" (Section 3.1, Algorithm 1; multi-head form Section 3.1 / Appendix).

For input ``u [L, d]`` (Algorithm 1)::

    Q = u W_Q,  K = u W_K,  V = u W_V                                  (projections, with bias)
    K' = SSM_shift(K)         shift matrix A, B = e_1: a learned causal FIR of length N (=C)
                              plus a skip,  K'_l = sum_{i<N} C_i K_{l-i} + D_k K_l
    per head h (head_dim d_h): KV_l = K'_l V_l^T       [d_h, d_h]
    Y = SSM_diag(KV)          S4D-Lin, bilinear, one kernel per head shared by its d_h^2 entries,
                              Y_l = (K * KV)_l + D KV_l
    O_l = Q_l^T Y_l           (sum over the first head index), then the output projection W_O

Defaults as the official code (HazyResearch/H3, ``src/models/ssm/h3.py`` building
``SSKernel(mode="diag", measure="diag-lin")``, whose ``SSKernelDiag`` defaults to
``disc="bilinear"``): ``d_state = 64`` for both SSMs, ``head_dim = 1`` (so ``K'V^T`` is
elementwise), S4D-Lin with ``log dt ~ U[log 1e-3, log 1e-1]``, ``C_shift`` Kaiming-uniform,
``D, D_k ~ N(0, 1)``. No activation anywhere (the multiplicative gates are the nonlinearity).

``disc`` (the diagonal SSM's discretisation, as in ``s4d``): ``"bilinear"`` (default, the
official code's) forms ``Ā = (1 + ΔA/2) / (1 - ΔA/2)``, ``B̄ = Δ B / (1 - ΔA/2)`` (S4 eq. (3)
for a diagonal ``A``); ``"zoh"`` forms ``Ā = exp(ΔA)``, ``B̄ = (exp(ΔA) - 1) / A · B`` (S4D eq. (5)).
Both give a complex diagonal transition, so every computation below is the same for both; only
:meth:`longseq.ssm.kernels.DiagSSMKernel.modes` differs.

``head_dim``: the cost is O(L d d_h log L) (there are ``d * d_h`` SSM channels), so like the
official code the head size is an option, default 1; ``head_dim=None`` takes the contract's
``num_heads`` instead (``d_h = d_model // num_heads``). With an int ``head_dim``, ``num_heads`` is
unused.

Computation (option ``method``, both tested equal to the token-by-token recurrence):

* ``"chunked"`` (default) — the shift SSM is a length-N FIR: a banded Toeplitz product in
  chunks of N positions (two batched matmuls, O(L N), :func:`longseq.ops.diag_ssm.chunk.fir_conv`); the
  diagonal SSM runs in its block form (Toeplitz matmul inside chunks of 64 positions, the state
  carried between chunks, :func:`longseq.ops.diag_ssm.chunk.diag_ssm_chunked`), O(L) work, only its
  input kept for the backward.
* ``"fft"`` — the paper's FlashConv (Section 4.2): both SSMs as FFT convolutions; sequences
  longer than ``chunk_size`` are cut into blocks, each an FFT convolution of size ~2*chunk_size,
  with the SSM state carried from block to block.

Decision: at L = 16K, d_model 256, causal fwd+bwd chunked was faster than fft, so it is the
default (the timing: benchmarks/notes/2026-12-08-docstring-timings.md).

Training path (``method="chunked"``, no state, float32/float64 input): one autograd function,
:func:`longseq.ops.h3.h3_core`, from ``x`` to the output projection. The forward computes ``Q, K, V`` with one
matmul into a channel-major buffer that is already the SSMs' ``[channels, B, chunks, T]`` layout,
runs Algorithm 1 over groups of heads and the output projection as one matmul; it keeps ``x``
and ``Q, K, V``. The backward works per group of 32 channels at L = 16K (every ``[c, B, L]``
tensor is a transient of one group) and in place: each group's ``dQ, dK, dV`` and ``O`` (the
output projection's input) replace its ``dO`` and ``Q, K, V``, which are dead by then, so the
weight gradients are one matmul each after the loop. ``head_dim = 1`` has a hand-written backward
(:func:`longseq.ops.h3.fused._core_chunks_backward`: the diagonal SSM's backward also returns its forward output, the
FIR's backward is :func:`longseq.ops.diag_ssm.chunk.fir_chunks_backward`), other head sizes go through
autograd on the recomputed group. The time goes mostly to the eight ``d x d`` matmuls (the
``Q, K, V`` buffer is larger than glibc's mmap threshold, so it is a fresh, page-faulting mapping
every call), then the diagonal SSM, the FIR and the elementwise products; the profile, the speed
of this path's versions and its memory peak against causal SDPA are in
benchmarks/notes/2026-12-08-docstring-timings.md.
Keeping ``Q, K, V`` instead of recomputing them saves three matmuls; fusing the output
projection removes the full-size ``O`` and ``dO`` the separate ``nn.Linear`` kept. Tried and
measured, not kept (each was no faster, or a few percent faster for tens of MB more; figures in
the same note):
groups of 64 channels, keeping the SSM's chunk states for the backward, keeping ``K'`` and ``Y``
for it.
Half-precision inputs take the plain path (SSMs in float32). Decoding and ``forward(state=...)``
also use the plain path; both continue from a given state, and one token is the O(d d_h N)
recurrent step (state: the last N-1 keys for the shift SSM and the diagonal state
``[d_h, d_h, H, N/2]``).

Causal only (decision): H3 is built for autoregressive language modelling — the shift SSM
remembers the previous tokens and the diagonal SSM accumulates ``K'V^T`` over the past, which
together implement "find the earlier key, return the value that followed it" (the paper's
associative-recall argument). Running either SSM over the future breaks that construction and
is not in the paper; for bidirectional tasks use ``s4d``/``dss``/``gss``.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ..ops.diag_ssm.chunk import DEFAULT_CHUNK, diag_ssm_chunked, fir_conv
from ..ops.diag_ssm.recurrent import diag_step
from ..ops.fftconv.fft import diag_ssm_conv, fft_conv, with_skip
from ..ops.h3 import h3_core
from ..ssm.discretize import DISCRETIZATIONS
from ..ssm.kernels import DiagSSMKernel
from ..utils.validate import check_choice, check_int, check_optional
from .base import Mixer, register
from .s4d import chunked_flops


def _h3_flops(L, d, h, causal):
    # default head_dim 1: d shift-SSM channels, d diagonal-SSM channels, four projections
    return 2.0 * L * d * d * 4 + chunked_flops(L, d, 32) + 2.0 * 2 * 64 * L * d + 4.0 * L * d


@register(
    "h3",
    family="state space",
    paper="Fu, Dao, Saab, Thomas, Rudra, Ré 2023, Hungry Hungry Hippos: Towards Language Modeling with State Space Models",
    complexity="O(N)",
    causal=True,
    bidirectional=False,
    step=True,
    flops=_h3_flops,
    renamed={"lr": "ssm_lr", "block_size": "chunk_size"},
)
class H3(Mixer):
    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        d_state: int = 64,
        head_dim: int | None = 1,
        chunk_size: int | None = 4096,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        ssm_lr: float | None = 1e-3,
        method: str = "chunked",
        disc: str = "bilinear",
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        self.method = check_choice("method", method, ("chunked", "fft"), owner="h3")
        check_choice("disc", disc, DISCRETIZATIONS, owner="h3")
        hd = d_model // num_heads if head_dim is None else head_dim
        if not isinstance(hd, int) or hd < 1 or d_model % hd:
            raise ValueError(f"head_dim must be a positive int dividing d_model={d_model} (or None), got {head_dim!r}")
        check_optional(check_int, "chunk_size", chunk_size, min=1, owner="h3")
        self.hd, self.nh, self.block_size = hd, d_model // hd, chunk_size
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        # shift SSM: x_l = S x_{l-1} + e_1 k_l, y_l = C_shift x_l + D_k k_l  ==  FIR with taps C_shift
        self.shift_C = nn.Parameter(torch.empty(d_model, d_state))
        nn.init.kaiming_uniform_(self.shift_C, a=math.sqrt(5))
        self.shift_D = nn.Parameter(torch.randn(d_model))
        self.kernel = DiagSSMKernel(self.nh, d_state, init="lin", disc=disc, dt_min=dt_min, dt_max=dt_max, lr=ssm_lr)
        self.D = nn.Parameter(torch.randn(self.nh))
        self.out = nn.Linear(d_model, d_model)

    def _shift_ssm(self, k, prev, return_state):
        """``k [B, d, L]``, ``prev [B, d, N-1]`` (the keys before this block, None = zeros) ->
        ``(K', new prev or None)``."""
        N = self.shift_C.shape[1]
        taps = with_skip(self.shift_C, self.shift_D)  # C_0 + D_k at lag 0
        if prev is None and (return_state or k.shape[-1] == 1 or self.method == "fft"):
            prev = k.new_zeros(k.shape[0], k.shape[1], N - 1)
        if k.shape[-1] == 1:  # recurrent step
            ext = torch.cat([prev.to(k.dtype), k], dim=-1)  # [B, d, N]
            y = torch.einsum("bdn,dn->bd", ext.flip(-1), taps).unsqueeze(-1)
        elif self.method == "fft":
            y = fft_conv(torch.cat([prev.to(k.dtype), k], dim=-1), taps)[..., N - 1 :]
        else:  # banded Toeplitz blocks
            y = fir_conv(k, taps, prev)
        if not return_state:
            return y, None
        tail = torch.cat([prev.to(k.dtype), k[..., max(0, k.shape[-1] - (N - 1)) :]], dim=-1)
        return y, tail[..., tail.shape[-1] - (N - 1) :]

    def _forward(self, x, mask, state, return_state):
        B, L, d = x.shape
        w, log_z = self.kernel.modes()
        if self.method == "chunked" and state is None and not return_state and x.dtype == log_z.real.dtype:
            # the training path (float32/float64; half-precision inputs take the plain path below,
            # which runs the SSMs in float32)
            W = torch.cat([p.weight for p in (self.q_proj, self.k_proj, self.v_proj)])
            b = torch.cat([p.bias for p in (self.q_proj, self.k_proj, self.v_proj)])
            taps = with_skip(self.shift_C, self.shift_D).to(x.dtype)
            T = max(DEFAULT_CHUNK, taps.shape[-1])
            return h3_core(x, W, b, taps, w[0], log_z, self.D, self.out.weight, self.out.bias, self.hd, T), None
        q, k, v = (rearrange(p(x), "b l d -> b d l") for p in (self.q_proj, self.k_proj, self.v_proj))
        k, prev = self._shift_ssm(k, None if state is None else state["k"], return_state)  # [B, d, L]
        kv = rearrange(k, "b (h i) l -> b i 1 h l", i=self.hd) * rearrange(
            v, "b (h j) l -> b 1 j h l", j=self.hd
        )  # [B, dh, dh, H, L]
        x0 = None if state is None else state["x"]
        if self.method == "fft" or (L == 1 and x0 is not None):
            y, xs = diag_ssm_conv(
                kv, w[0], log_z, x0, D=self.D, return_state=return_state, block_size=self.block_size
            )  # [B, dh, dh, H, L]
        else:
            y, xs = diag_ssm_chunked(kv, w[0], log_z, D=self.D, state=x0, return_state=return_state)
        y = (rearrange(q, "b (h i) l -> b i 1 h l", i=self.hd) * y).sum(1)  # [B, dh, H, L]
        y = self.out(rearrange(y, "b j h l -> b l (h j)"))
        return y, ({"k": prev, "x": xs} if return_state else None)

    def _step(self, x_t, state):
        """One token: the ``L = 1`` case of :meth:`_forward` on ``[B, d]`` rows -- the same
        elementwise operations (shift-SSM FIR taps, ``k v^T``, the diagonal step of eq. (1),
        ``q``-contraction), without einops' length axis, so fewer Python-level ops per token."""
        B, hd, nh = x_t.shape[0], self.hd, self.nh
        w, log_z = self.kernel.modes()  # cached while decoding (no autograd)
        q, k, v = self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)  # [B, d] each
        taps = with_skip(self.shift_C, self.shift_D)  # [d, N]: C_0 + D_k at lag 0
        ext = torch.cat([state["k"].to(k.dtype), k.unsqueeze(-1)], dim=-1)  # [B, d, N]: k_{t-N+1} .. k_t
        k = torch.einsum("bdn,dn->bd", ext.flip(-1), taps)  # [B, d] shift-SSM output K'
        kv = k.view(B, nh, hd).transpose(1, 2).unsqueeze(2) * v.view(B, nh, hd).transpose(1, 2).unsqueeze(1)
        # kv [B, i, j, H] = K'_{h i} V_{h j}
        y, xs = diag_step(kv.to(log_z.real.dtype), w[0], log_z, state["x"])  # [B, i, j, H], [B, i, j, H, N/2]
        y = y.to(kv.dtype) + self.D * kv  # + D u (the skip of diag_ssm_conv)
        y = (q.view(B, nh, hd).transpose(1, 2).unsqueeze(2) * y).sum(1)  # [B, j, H]
        y = self.out(y.transpose(1, 2).reshape(B, self.d_model))  # [B, (h j)] -> [B, d]
        return y, {"k": ext[..., 1:], "x": xs}

    def _init_state(self, batch_size, device, dtype):
        w, _ = self.kernel.modes()
        return {
            "k": torch.zeros(batch_size, self.d_model, self.shift_C.shape[1] - 1, device=device, dtype=dtype),
            "x": torch.zeros(batch_size, self.hd, self.hd, *w.shape[1:], device=device, dtype=w.dtype),
        }

    def state_size(self, seq_len):
        N = self.shift_C.shape[1]
        return self.d_model * (N - 1) + 2 * self.hd * self.hd * self.nh * (N // 2)
