"""FLASH: the Gated Attention Unit with mixed chunk attention (Hua, Dai, Liu, Le, ICML 2022,
"Transformer Quality in Linear Time", arXiv 2202.10447; sec. 2 GAU, sec. 3 FLASH).

GAU (sec. 2, eq. 1-4) on the (already normalised) input X in R^{N x d}:

    [U | V | Z] = SiLU(X W + b)          U, V in R^{N x e},  Z in R^{N x s}   (shared Z)
    Q_*, K_* = Z * gamma_* + beta_*       cheap per-dim scale and offset "heads"
    O = (U * V_hat) W_o

Mixed chunk attention (sec. 3.2, eq. 6-8): the sequence is split into G chunks of C tokens and
four scale-offset heads (Q^quad, K^quad, Q^lin, K^lin) are made from Z:

    V_hat^quad_g = relu^2(Q^quad_g K^quad_g^T / C + B) V_g                 (inside each chunk)
    V_hat^lin_g  = Q^lin_g (sum_h K^lin_h^T V_h) / C                     (across chunks, no softmax)

with h over all chunks (bidirectional) or h < g (causal; the current chunk is covered by the
quadratic part, which is then masked lower-triangular incl. the diagonal). Cost O(N C (s + e))
time, O(N C) memory: no N x N matrix is formed.

Decisions on ambiguous points:

* Scaling of the linear part: 1/C (the chunk size). The paper's pseudo-code leaves it open and
  reproductions use 1/C or 1/N; 1/N would make outputs depend on the total (padded) length,
  which breaks the causal/recurrent form and padding invariance. 1/C keeps both exact.
* The quadratic part is also scaled by 1/C for every chunk, including a last partial chunk
  (lengths that are not a multiple of C are padded internally; padded positions have their
  values zeroed, so they contribute nothing to either part).
* Position information: RoPE (default on) rotates all four Q/K heads by absolute position (the
  paper's pseudo-code applies RoPE to Q and K); ``rel_pos_bias`` (default on) adds the paper's
  learned Toeplitz bias B[i, j] = w[j - i] inside chunks (2C - 1 parameters). Inside a chunk
  only relative positions enter, so chunks are aligned to absolute positions 0, C, 2C, ...
* Single head, as in the paper (GAU's single head "suffices", sec. 2): registered with
  ``heads=False``, so ``num_heads`` other than 1 is refused (models pass it only to mixers with heads).
* GAU replaces attention AND feed-forward (registered with ``has_ffn=True``). The pre-norm and
  residual of eq. 4 are left to the block that holds the mixer. Defaults as in the paper:
  e = 2d (``expand=2``), s = 128 (``qk_dim``), C = 256 (``chunk_size``); gamma ~ N(0, 0.02^2),
  beta = 0; ``bias`` on W and W_o as in the paper.
* Recurrent state (``step``): S = sum over completed chunks of K^lin^T V / C, plus the current
  chunk's cache of K^quad, K^lin, V (< C tokens); when a chunk completes its K^lin^T V is folded
  into S. ``forward(state=...)`` continues from any position (chunked prefill), exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.rotary import RotaryEmbedding
from ..utils.validate import check_int, check_number
from .base import Mixer, register

QQ, KQ, QL, KL = range(4)  # the four scale-offset heads: quad query/key, linear query/key


def flash_flops(L: int, d: int, h: int, causal: bool, chunk: int = 256, s: int = 128, expansion: float = 2.0) -> float:
    e = int(expansion * d)
    proj = 2 * L * d * (2 * e + s) + 2 * L * e * d
    quad = 2 * L * min(chunk, L) * (s + e) * (0.5 if causal else 1.0)
    lin = 2 * 2 * L * s * e
    return float(proj + quad + lin)


@register(
    "flash",
    family="gated attention",
    paper="Hua et al. 2022, Transformer Quality in Linear Time (FLASH: GAU + mixed chunk attention)",
    complexity="O(N C)",
    causal=True,
    bidirectional=True,
    step=True,
    has_ffn=True,
    flops=flash_flops,
    heads=False,
    renamed={"expansion": "expand"},
)
class FlashGAU(Mixer):
    """Gated Attention Unit with mixed chunk attention (relu^2 inside chunks, linear across)."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        chunk_size: int = 256,
        qk_dim: int = 128,
        expand: float = 2.0,
        rope: bool = True,
        rel_pos_bias: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_int("chunk_size", chunk_size, min=1, owner="flash")
        check_int("qk_dim", qk_dim, min=1, owner="flash")
        if rope and qk_dim % 2:
            raise ValueError(f"flash: qk_dim must be even with rope=True, got {qk_dim!r}")
        check_number("expand", expand, min=0, min_open=True, owner="flash")
        if int(expand * d_model) < 1:
            raise ValueError(f"flash: expand * d_model must be >= 1, got expand={expand!r}")
        self.chunk, self.s, self.e = chunk_size, qk_dim, int(expand * d_model)
        self.hidden = nn.Linear(d_model, 2 * self.e + self.s, bias=bias)  # W, b -> [U | V | Z]
        self.gamma = nn.Parameter(torch.randn(4, self.s) * 0.02)  # [4, s]
        self.beta = nn.Parameter(torch.zeros(4, self.s))  # [4, s]
        self.out = nn.Linear(self.e, d_model, bias=bias)  # W_o
        self.rel_pos = nn.Parameter(torch.zeros(2 * chunk_size - 1)) if rel_pos_bias else None
        self.rope = RotaryEmbedding(self.s) if rope else None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", chunk_size={self.chunk}, qk_dim={self.s}, e={self.e}"

    # ------------------------------------------------------------------ pieces
    def _project(self, x: torch.Tensor, offset: int):
        """``x: [B, L, d]`` -> u, v ``[B, L, e]`` and the four heads ``[B, L, 4, s]``."""
        u, v, z = F.silu(self.hidden(x)).split([self.e, self.e, self.s], dim=-1)
        qk = z.unsqueeze(2) * self.gamma + self.beta  # [B, L, 4, s]
        if self.rope is not None:
            qk = self.rope(qk.transpose(1, 2), offset).transpose(1, 2)
        return u, v, qk

    def _bias(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | float:
        """Toeplitz bias ``B[i, j] = w[j - i + C - 1]`` for in-chunk positions ``rows x cols``."""
        if self.rel_pos is None:
            return 0.0
        return self.rel_pos[cols[None, :] - rows[:, None] + self.chunk - 1]

    # ------------------------------------------------------------------ forward
    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        C = self.chunk
        offset = 0 if state is None else state["pos"]
        u, v, qk = self._project(x, offset)
        n_c = 0
        if state is not None:  # prepend the current chunk's cache so that chunks stay aligned
            n_c = state["v"].shape[1]
            qk = torch.cat([state["qk"], qk], 1)  # [B, n_c + L, 4, s]
            v = torch.cat([state["v"], v], 1)  # [B, n_c + L, e]
        N = n_c + L
        G = -(-N // C)
        pad = G * C - N
        valid = torch.arange(G * C, device=x.device) < N  # [N_pad]
        valid = valid.expand(B, -1)
        if mask is not None:
            valid = valid & F.pad(mask, (n_c, pad), value=False)
        vz = F.pad(v, (0, 0, 0, pad)) * valid[..., None].to(v.dtype)  # [B, N_pad, e], zero at padding
        qkz = F.pad(qk, (0, 0, 0, 0, 0, pad))  # [B, N_pad, 4, s]
        vz = vz.view(B, G, C, self.e)  # [B, G, C, e]
        qkz = qkz.view(B, G, C, 4, self.s)  # [B, G, C, 4, s]

        # quadratic part inside chunks
        pos = torch.arange(C, device=x.device)
        scores = torch.einsum("bgis,bgjs->bgij", qkz[..., QQ, :], qkz[..., KQ, :]) / C + self._bias(pos, pos)
        attn = F.relu(scores).square()  # [B, G, C, C]
        if self.causal:
            attn = attn * (pos[None, :] <= pos[:, None]).to(attn.dtype)
        y = attn @ vz  # [B, G, C, e]

        # linear part across chunks
        kv = torch.einsum("bgcs,bgce->bgse", qkz[..., KL, :], vz) / C  # [B, G, s, e]
        S0 = None if state is None else state["kv"]
        if self.causal:
            ctx = torch.cat([torch.zeros_like(kv[:, :1]), kv[:, :-1]], 1).cumsum(1)  # exclusive prefix sum
            if S0 is not None:
                ctx = ctx + S0[:, None]
        else:
            ctx = kv.sum(1, keepdim=True)  # [B, 1, s, e]
        y = y + torch.einsum("bgcs,bgse->bgce", qkz[..., QL, :], ctx)

        y = y.reshape(B, G * C, self.e)[:, n_c:N]
        out = self.out(u * y)
        new_state = None
        if return_state:
            full = N // C  # completed chunks
            S = kv[:, :full].sum(1)  # [B, s, e]
            new_state = {
                "kv": S if S0 is None else S0 + S,
                "qk": qk[:, full * C :],  # [B, N mod C, 4, s]
                "v": v[:, full * C :],  # [B, N mod C, e]
                "pos": offset + L,
            }
        return out, new_state

    # ------------------------------------------------------------------ recurrence
    def _init_state(self, batch_size, device, dtype):
        return {
            "kv": torch.zeros(batch_size, self.s, self.e, device=device, dtype=dtype),
            "qk": torch.zeros(batch_size, 0, 4, self.s, device=device, dtype=dtype),
            "v": torch.zeros(batch_size, 0, self.e, device=device, dtype=dtype),
            "pos": 0,
        }

    def _step(self, x_t, state):
        """One token in O(C (s + e) + s e): quad part over the chunk cache, linear part from S."""
        C = self.chunk
        u, v, qk = self._project(x_t.unsqueeze(1), state["pos"])  # [B, 1, e], [B, 1, 4, s]
        qk = torch.cat([state["qk"], qk], 1)  # [B, n, 4, s], n <= C
        v = torch.cat([state["v"], v], 1)  # [B, n, e]
        n = v.shape[1]
        cols = torch.arange(n, device=x_t.device)
        q = qk[:, -1]  # [B, 4, s]
        scores = torch.einsum("bs,bjs->bj", q[:, QQ], qk[:, :, KQ]) / C + self._bias(cols[-1:], cols)[0]
        y = torch.einsum("bj,bje->be", F.relu(scores).square(), v)
        y = y + torch.einsum("bs,bse->be", q[:, QL], state["kv"])
        kv = state["kv"]
        if n == C:  # the chunk is complete: fold it into the linear state
            kv = kv + torch.einsum("bcs,bce->bse", qk[:, :, KL], v) / C
            qk, v = qk[:, :0], v[:, :0]
        out = self.out(u[:, 0] * y)
        return out, {"kv": kv, "qk": qk, "v": v, "pos": state["pos"] + 1}

    def state_size(self, seq_len):
        return self.s * self.e + (seq_len % self.chunk) * (4 * self.s + self.e)
