"""Signal-preserving causal attention for deep transformers without shortcuts.

He, Martens, Zhang, Botev, Brock, Smith, Teh (ICLR 2023), "Deep Transformers without Shortcuts:
Modifying Self-attention for Faithful Signal Propagation", arXiv 2302.10322, sec. 4:

    Attn_l(X) = diag(D_l) softmax(X W_Q (X W_K)^T / sqrt(d_h) + B_l + causal mask) X W_V W_O   (eq. 9)

with a fixed (untrained) bias ``B_l`` and row scaling ``D_l``, shared by all heads, and
``W_Q = 0`` at init, so that the attention matrix at init is ``A_l = L_l L_{l-1}^{-1}`` (eq. 8):
the kernel map ``Sigma_{l-1} -> A_l Sigma_{l-1} A_l^T = Sigma_l`` walks the token kernel along a
schedule of target kernels instead of collapsing it to rank one (see
:mod:`longseq.nn.deep_vanilla` for the E-SPA / U-SPA kernels, the gamma/rho schedule, the
float64 Cholesky computation and the decisions on unverified points).

Options
-------
``init``: ``"espa"`` (default), ``"uspa"`` or ``"shaped"``. ``"shaped"`` is shaped attention
(Noci et al. 2023, in the form of He & Hofmann 2023, "Simplifying Transformer Blocks"):
``A = alpha I + beta softmax(Q K^T / sqrt(d_h)) - gamma C`` with ``C`` the uniform causal
attention over the allowed keys (``C_ij = 1 / (i + 1)``, ``j <= i``, without padding) and
per-head trainable ``alpha = beta = gamma = 1`` at init; with ``W_Q = 0`` the softmax equals
``C`` at init, so ``A = I``. Decision: one ``init`` option rather than a separate ``shaped``
flag, since shaped attention uses neither ``B_l`` nor ``D_l``.
``layer_index`` (0-based) and ``n_layers``: the layer's place in the stack (the backbone fills
them in); SPA layer ``l = layer_index + 1`` of ``L = n_layers``.
``gamma_final`` (E-SPA ``gamma_L``, default 0.005) and ``rho_final`` (U-SPA ``rho_L``, default 0.8).
``max_len`` (default 512): ``B_l`` is ``[max_len, max_len]``; longer inputs (or KV caches) raise
``ValueError``. For causal attention the blocks computed at ``max_len`` are exact for every
prefix (leading blocks of a Cholesky factor and of its inverse), so ``B_l[:N, :N]`` serves length
``N``. The buffers are float64, non-persistent (recomputed from the options on load) and cast
to the input dtype per call.

Initialisation (decisions, following the paper's recipe and the DKS/TAT conventions): ``W_Q = 0``;
``W_K ~ N(0, 1/d)``; ``W_V`` and ``W_O`` orthogonal (so the value path preserves the kernel
exactly); biases zero. Causal only: the non-causal variant (symmetric matrix square roots) is not
prefix-consistent and is left out. Cost: as softmax attention, O(N^2) (SDPA with an additive
float mask; shaped attention's ``C V`` is a running mean, O(N)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn import deep_vanilla as dv
from ..nn.kvcache import kv_append, kv_init
from ..utils.validate import check_choice, check_int
from .base import Mixer, register
from .softmax import allowed_keys, attention_flops

INITS = ("espa", "uspa", "shaped")


@register(
    "espa",
    family="exact attention",
    paper="He et al. 2023, Deep Transformers without Shortcuts: Modifying Self-attention for Faithful "
    "Signal Propagation (E-SPA/U-SPA); shaped attention: Noci et al. 2023, He & Hofmann 2023",
    complexity="O(N^2)",
    causal=True,
    bidirectional=False,
    step=True,
    flops=attention_flops,
    max_len_option="max_len",
)
class SignalPreservingAttention(Mixer):
    """Causal multi-head attention with the E-SPA / U-SPA / shaped initialisation and a KV cache."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        init: str = "espa",
        layer_index: int = 0,
        n_layers: int = 1,
        gamma_final: float = 0.005,
        rho_final: float = 0.8,
        max_len: int = 512,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_choice("init", init, INITS, owner="espa")
        check_int("n_layers", n_layers, min=1, owner="espa")
        check_int(f"layer_index (n_layers={n_layers})", layer_index, min=0, max=n_layers - 1, owner="espa")
        check_int("max_len", max_len, min=1, owner="espa")
        self.init, self.layer_index, self.n_layers = init, layer_index, n_layers
        self.max_len = max_len
        self.q = nn.Linear(d_model, d_model, bias=bias)
        self.k = nn.Linear(d_model, d_model, bias=bias)
        self.v = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self._init_weights()
        if init == "shaped":
            # per-head alpha (identity), beta (softmax), gamma (uniform causal), all 1 at init
            self.alpha = nn.Parameter(torch.ones(num_heads))
            self.beta = nn.Parameter(torch.ones(num_heads))
            self.gamma = nn.Parameter(torch.ones(num_heads))
        else:
            final = gamma_final if init == "espa" else rho_final
            dv.kernel_parameter(init, layer_index + 1, n_layers, final)  # validates gamma/rho
            A = dv.spa_attention(init, max_len, layer_index + 1, n_layers, final)  # [N, N] float64
            B, D = dv.bias_and_scale(A)
            self.register_buffer("spa_bias", B, persistent=False)  # [N, N] float64
            self.register_buffer("spa_scale", D, persistent=False)  # [N] float64

    def _init_weights(self) -> None:
        with torch.no_grad():
            nn.init.zeros_(self.q.weight)
            nn.init.normal_(self.k.weight, std=self.d_model**-0.5)
            nn.init.orthogonal_(self.v.weight)
            nn.init.orthogonal_(self.out.weight)
            for lin in (self.q, self.k, self.v, self.out):
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, init={self.init}, layer={self.layer_index + 1}/{self.n_layers}, "
            f"max_len={self.max_len}"
        )

    # ------------------------------------------------------------------ helpers
    def _heads(self, x):
        return rearrange(x, "b l (h d) -> b h l d", h=self.num_heads)

    def _check_len(self, total: int) -> None:
        if total > self.max_len:
            raise ValueError(
                f"espa: sequence length {total} exceeds max_len={self.max_len} (the size of the "
                f"fixed attention bias); build the mixer with a larger max_len option"
            )

    def _spa_mask(self, allowed, offset, L, L_k, dtype):
        """Additive float mask ``[.., L, L_k]``: ``B_l`` rows of the query positions, -inf where not allowed."""
        bias = self.spa_bias[offset : offset + L, :L_k].to(dtype)  # [L, Lk]
        return bias.masked_fill(~allowed, float("-inf"))

    def _uniform_mean(self, v, allowed):
        """``C V``: the mean of the allowed values up to each query, ``[B, H, L, Dh]``."""
        w = allowed.to(v.dtype)  # [B|1, 1, L, Lk]
        return torch.einsum("bhij,bhjd->bhid", w, v) / w.sum(-1, keepdim=True)

    # ------------------------------------------------------------------ forward
    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        offset = 0 if state is None else state["len"]
        self._check_len(offset + L)
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # [B, H, L, Dh]
        new_state = None
        if state is not None:
            k, v, new_state = kv_append(state, k, v)
        L_k = k.shape[2]
        allowed = allowed_keys(mask, L, L_k, True, x.device)  # [B|1, 1, L, Lk]
        if self.init == "shaped":
            soft = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            v_q = v[:, :, L_k - L :]  # values at the query positions
            o = (
                self.alpha[:, None, None] * v_q
                + self.beta[:, None, None] * soft
                - self.gamma[:, None, None] * self._uniform_mean(v, allowed)
            )
        else:
            attn_mask = self._spa_mask(allowed, offset, L, L_k, q.dtype)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            o = o * self.spa_scale[offset : offset + L, None].to(o.dtype)  # diag(D_l) rows
        return self.out(rearrange(o, "b h l d -> b l (h d)")), new_state

    @torch.no_grad()
    def attention_weights(self, x, mask=None) -> torch.Tensor:
        """The effective attention matrix ``[B, H, L, L]`` of a full sequence, materialised (the
        dense reference of ``_forward``: ``y = out(A @ v)``)."""
        B, L, _ = x.shape
        self._check_len(L)
        q, k = self._heads(self.q(x)), self._heads(self.k(x))
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * self.head_dim**-0.5
        allowed = allowed_keys(mask, L, L, True, x.device)
        if self.init == "shaped":
            soft = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
            eye = torch.eye(L, dtype=x.dtype, device=x.device)
            C = allowed.to(x.dtype) / allowed.sum(-1, keepdim=True)
            h = (slice(None), None, None)
            return self.alpha[h] * eye + self.beta[h] * soft - self.gamma[h] * C
        soft = (scores + self._spa_mask(allowed, 0, L, L, x.dtype)).softmax(-1)
        return soft * self.spa_scale[:L, None].to(x.dtype)

    def _init_state(self, batch_size, device, dtype):
        return kv_init(batch_size, self.num_heads, self.head_dim, self.head_dim, device, dtype)

    def state_size(self, seq_len):
        return 2 * self.d_model * seq_len
