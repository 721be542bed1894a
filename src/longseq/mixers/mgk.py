"""Transformer-MGK and Transformer-MLK: attention with a mixture of keys per position.

Nguyen, Nguyen, Le, Nguyen, Nguyen, Osher, Baraniuk, Ho 2022, "Improving Transformers with
Probabilistic Attention Keys" (ICML 2022, arXiv 2110.08678). Attention is read as a Gaussian
mixture over the keys; MGK gives every position M keys ``k_j1 .. k_jM`` (M = 2 in the paper),
each a Gaussian component with prior ``pi_r``:

    A_ij = sum_r pi_r N(q_i | k_jr, s^2 I) / sum_j' sum_r pi_r N(q_i | k_j'r, s^2 I),   y_i = sum_j A_ij v_j

(the paper's eq. for MGK attention, one value per position); MLK replaces the Gaussian by the
linear-attention kernel ``phi(q)^T phi(k)``, ``phi = elu + 1``:

    y_i = phi(q_i)^T sum_j kt_j v_j^T / (phi(q_i)^T sum_j kt_j + eps),   kt_j = sum_r pi_r phi(k_jr)

so MLK is linear attention with one mixed key per position (O(N) time, an O(1) recurrent state).

Decisions on the ambiguous points (see the official code minhtannguyen/transformer-mgk)
--------------------------------------------------------------------------------------
* Keys: M separate key projections ``k_jr = W_K^r x_j`` (the "2keys" code variant and the
  paper's formulation); the "mu-shift" variant (one projection, learned offsets) is not provided.
* sigma: one shared ``s^2 = sqrt(d_head)`` for all components (the LRA code). The LM code's
  ``s_2^2 = sqrt(d_head) / 3`` looks like an inconsistency and is not followed. With one shared
  ``s`` the term ``-|q_i|^2 / (2 s^2)`` is common to all (j, r) and cancels in the normalisation,
  so ``log(pi_r N) = log pi_r + (q_i . k_jr - |k_jr|^2 / 2) / s^2 + const_i``: MGK is exactly
  softmax attention over the M L keys ``[k_jr / s^2, log pi_r - |k_jr|^2 / (2 s^2)]`` with
  queries ``[q_i, 1]``, which is how it is computed (fused SDPA, no N x N matrix on devices
  with flash kernels; the max-subtraction of the softmax replaces the code's unstabilised exp).
* pi: one M-vector per head, the same for every key position (the LM code's per-position pi
  ties the model to a maximum length of 256). ``mixture="learnable"``: pi = softmax(logits),
  logits initialised to 0 (pi = 1/M, the code's 0.5 init; the softmax keeps pi a distribution
  instead of the code's clamp to [0, 1]; only ratios matter after normalisation).
  ``mixture="soft_em"`` (MGK only): pi is a buffer; each training forward computes the EM
  update of the shared prior, ``pi_r <- mean_i sum_j A_ij gamma_ijr`` with responsibilities
  ``gamma_ijr = pi_r N_jr(q_i) / sum_r' pi_r' N_jr'(q_i)`` (the posterior mass of component r,
  averaged over real queries, batch and positions); it is fixed in eval mode.
* Causal (LM): keys j > i are masked before the normalisation; MLK uses the chunked prefix
  sums of linear attention and has a ``step``. MLK follows the paper's equation: no per-vector
  L1 "sum_norm" and no extra 1/sqrt(d) (LM code), no mixing before phi (LRA code).
* RoPE (``rope=True``): queries and all keys are rotated. For MGK this is exact and relative
  (rotations keep distances: ``|R_i q - R_j k| = |q - R_{j-i} k|``); for MLK it is the
  "rotate before the feature map" variant, as for ``linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..nn.rotary import RotaryEmbedding
from ..utils.validate import check_choice
from .base import Mixer, register
from .linear_attention import (
    FeatureMapAttention,
    _check_positive_int,
    _mask_keys,
    elu_feature_map,
    linear_attention_flops,
    project_heads,
)
from .softmax import allowed_keys

_MIXTURES = ("learnable", "soft_em")


def mgk_flops(L: int, d: int, h: int, causal: bool, num_keys: int = 2) -> float:
    proj = 2 * L * d * (3 + num_keys) * d
    core = 2 * 2 * L * num_keys * L * (d + h) * (0.5 if causal else 1.0)
    return float(proj + core)


def mlk_flops(L: int, d: int, h: int, causal: bool, num_keys: int = 2) -> float:
    return linear_attention_flops(L, d, h, causal, n_keys=num_keys) + float(2 * L * d * num_keys)


class _MixturePrior(nn.Module):
    """Per-head mixture weights pi: ``[H, M]``, learnable (softmax of logits) or an EM buffer."""

    def __init__(self, num_heads: int, num_keys: int, mixture: str) -> None:
        super().__init__()
        self.mixture = mixture
        if mixture == "learnable":
            self.logits = nn.Parameter(torch.zeros(num_heads, num_keys))
        else:
            self.register_buffer("pi", torch.full((num_heads, num_keys), 1.0 / num_keys))

    def log_pi(self) -> torch.Tensor:  # [H, M]
        if self.mixture == "learnable":
            return self.logits.log_softmax(-1)
        return self.pi.clamp_min(torch.finfo(self.pi.dtype).tiny).log()

    def forward(self) -> torch.Tensor:
        return self.log_pi().exp()


def _check_mixture_options(num_keys, mixture, allowed=_MIXTURES):
    _check_positive_int("num_keys", num_keys)
    check_choice("mixture", mixture, allowed)


@register(
    "mgk",
    family="kernel / mixture attention",
    paper="Nguyen et al. 2022, Improving Transformers with Probabilistic Attention Keys (Transformer-MGK)",
    complexity="O(M N^2)",
    causal=True,
    bidirectional=True,
    step=False,
    flops=mgk_flops,
)
class MixtureOfGaussianKeys(Mixer):
    """Transformer-MGK attention: M Gaussian keys per position, shared sigma^2 = sqrt(d_head).

    Options: ``num_keys`` (M, default 2), ``mixture`` ("learnable" or "soft_em"), ``rope``,
    ``bias``. See the module docstring for the decisions.
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        num_keys: int = 2,
        mixture: str = "learnable",
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        _check_mixture_options(num_keys, mixture)
        self.num_keys = num_keys
        self.sigma2 = self.head_dim**0.5
        self.qkv = nn.Linear(d_model, (2 + num_keys) * d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.prior = _MixturePrior(num_heads, num_keys, mixture)
        self.rope = RotaryEmbedding(self.head_dim) if rope else None

    def _forward(self, x, mask, state, return_state):
        B, L, _ = x.shape
        M = self.num_keys
        q, k, v = project_heads(self.qkv(x), self.num_heads, M, self.rope)  # k: [B, H, L, M, Dh]
        if M == 1:
            k = k.unsqueeze(3)
        # log(pi_r N(q | k_jr, s^2)) + const_i = [q, 1] . [k / s^2, log pi_r - |k|^2 / (2 s^2)]
        bias = self.prior.log_pi().to(x.dtype)[None, :, None, :] - k.square().sum(-1) / (2 * self.sigma2)
        keys = rearrange(torch.cat([k / self.sigma2, bias.unsqueeze(-1)], -1), "b h l m d -> b h (l m) d")
        queries = torch.cat([q, torch.ones_like(q[..., :1])], -1)  # [B, H, L, Dh + 1]
        values = v.repeat_interleave(M, dim=2)  # [B, H, L M, Dh]
        em = self.prior.mixture == "soft_em" and self.training
        if em:  # one-hot component channels: their outputs are sum_j A_ij gamma_ijr
            onehot = torch.eye(M, dtype=v.dtype, device=v.device).repeat(L, 1)  # [L M, M]
            values = torch.cat([values, onehot.expand(B, self.num_heads, -1, -1)], -1)
        if mask is None and self.causal:
            # query i duplicated at positions i M .. i M + M - 1; the last copy sees exactly the keys
            # (j <= i, all r) under the fused causal mask
            o = F.scaled_dot_product_attention(
                queries.repeat_interleave(M, dim=2), keys, values, is_causal=True, scale=1.0
            )[:, :, M - 1 :: M]
        else:
            allowed = allowed_keys(mask, L, L, self.causal, x.device)  # [B|1, 1, L, L] or None
            if allowed is not None:
                allowed = allowed.repeat_interleave(M, dim=-1)  # [B|1, 1, L, L M]
            o = F.scaled_dot_product_attention(queries, keys, values, attn_mask=allowed, scale=1.0)
        if em:
            self._em_update(o[..., -M:].detach(), mask)
            o = o[..., :-M]
        return self.out(rearrange(o, "b h l d -> b l (h d)")), None

    @torch.no_grad()
    def _em_update(self, resp: torch.Tensor, mask: torch.Tensor | None) -> None:
        """M-step of the shared prior: pi_r = mean over real queries of sum_j A_ij gamma_ijr."""
        if mask is None:
            pi = resp.mean(dim=(0, 2))  # [H, M]
        else:
            w = mask[:, None, :, None].to(resp.dtype)
            pi = (resp * w).sum(dim=(0, 2)) / w.sum(dim=(0, 2))
        self.prior.pi.copy_(pi / pi.sum(-1, keepdim=True))

    def extra_repr(self):
        return super().extra_repr() + f", num_keys={self.num_keys}, mixture={self.prior.mixture!r}"


@register(
    "mlk",
    family="kernel / linear attention",
    paper="Nguyen et al. 2022, Improving Transformers with Probabilistic Attention Keys (Transformer-MLK)",
    complexity="O(M N)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=mlk_flops,
)
class MixtureOfLinearKeys(FeatureMapAttention):
    """Transformer-MLK: linear attention (``elu + 1``) with M keys per position mixed by pi.

    Options: ``num_keys`` (M, default 2), ``chunk_size`` (causal chunk length), ``rope``, ``bias``.
    pi is learnable (softmax of per-head logits).
    """

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        num_keys: int = 2,
        chunk_size: int = 128,
        rope: bool = False,
        bias: bool = False,
    ) -> None:
        _check_mixture_options(num_keys, "learnable")
        super().__init__(
            d_model, num_heads=num_heads, causal=causal, chunk_size=chunk_size, rope=rope, bias=bias, n_keys=num_keys
        )
        self.num_keys = num_keys
        self.prior = _MixturePrior(num_heads, num_keys, "learnable")

    def _features(self, q, k, mask, state):
        if self.num_keys == 1:
            k = k.unsqueeze(3)
        pi = self.prior().to(q.dtype)  # [H, M]
        fk = torch.einsum("bhlmd,hm->bhld", elu_feature_map(k), pi)  # mixed key kt_j
        initial = None if state is None else (state["S"], state["z"])
        return elu_feature_map(q), _mask_keys(fk, mask), initial, {}

    def extra_repr(self):
        return super().extra_repr() + f", num_keys={self.num_keys}"
