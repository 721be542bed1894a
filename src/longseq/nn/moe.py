"""Switch Transformer feed-forward (Fedus, Zoph & Shazeer 2021, "Switch Transformers: Scaling to
Trillion Parameter Models with Simple and Efficient Sparsity", JMLR 2022, sec. 2), the ``moe``
kind of :class:`longseq.nn.layers.FeedForward`.

Top-1 ("switch") routing over ``E = num_experts`` feed-forward experts:

    p(x) = softmax(W_r x)                        router, computed in float32 (sec. 2.4; float64 inputs stay float64)
    i(x) = argmax_i p_i(x);   y = p_{i(x)}(x) * E_{i(x)}(x)          (eq. 2, top-1)

* Expert capacity (eq. 3 / sec. 2.2): ``C = ceil(capacity_factor * T / E)`` slots per expert,
  ``T`` the number of (real) tokens in the batch. Tokens claim slots in batch order (flattened
  ``[B, L]``, first come first served, as in the paper's Mesh-TF dispatch); tokens beyond an
  expert's capacity are DROPPED: their FFN output is 0, so the block's residual connection passes
  them through unchanged.
* Dispatch is real: tokens are gathered into an ``[E, C, d]`` buffer, every expert runs one
  batched matmul on its ``C`` slots only, and outputs are gathered back -- compute is
  ``capacity_factor`` x that of one dense FFN, not ``E`` x.
* Load-balancing loss (eq. 4-6): ``aux = alpha * E * sum_i f_i P_i`` with ``f_i`` the fraction of
  tokens whose argmax is expert ``i`` (counted before capacity dropping, as in the paper) and
  ``P_i`` the mean router probability of expert ``i``; ``alpha = 1e-2`` (paper default).
* Router z-loss (optional; Zoph et al. 2022, ST-MoE, eq. 5): ``z_loss_weight * mean_x
  (logsumexp_i W_r x)^2``; ST-MoE uses ``1e-3``; off (0) by default, as in Switch.
* ``aux_loss`` (a tensor attribute, set by every forward) = load balancing + z-loss: the trainer
  adds every module's ``aux_loss`` to the training loss and logs it. The parts are kept as
  ``load_balancing_loss``, ``z_loss`` and ``dropped_fraction`` (detached) for inspection.

Decisions on ambiguous points:

* Padding: when the model passes a ``mask`` (True = real token), padded tokens are not routed
  (FFN output 0), take no capacity slot, and are excluded from ``T``, ``f_i``, ``P_i`` and the
  z-loss, so routing statistics and drops of real tokens do not depend on the amount of padding.
* Evaluation: ``eval_capacity_factor`` (default ``None``) sets the capacity outside training;
  ``None`` means no capacity limit (no token dropped), so evaluation and one-token ``step``
  decoding are per-token and causal. Training with a finite capacity is inherently not causal
  nor per-sequence (whether a token is dropped depends on the tokens before it in the flattened
  batch, other sequences included, and ``C`` on the batch size) -- a property of the method.
* Initialisation: the router uses the paper's reduced scale (sec. 2.4: normal, std
  ``sqrt(0.1 / d)``); experts use ``nn.Linear``'s default init like the dense FFN they replace.
  Each expert has the dense FFN's width (``mult * d``; GLU experts 2/3 of it, as in FeedForward).
* Router jitter (multiplicative uniform noise ``[1 - eps, 1 + eps]`` on the router input during
  training, used by Switch for precision stability) is an option, off by default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SwitchFeedForward", "switch_route"]

EXPERT_KINDS = ("mlp", "swiglu", "geglu")


def switch_route(logits: torch.Tensor, valid: torch.Tensor, capacity: int | None):
    """Top-1 routing with capacity. ``logits [T, E]`` (float32), ``valid [T]`` bool.

    Returns ``probs [T, E]``, ``expert [T]`` (argmax), ``gate [T]`` (its probability),
    ``position [T]`` (slot index within the expert, in token order), ``keep [T]`` (valid and
    within capacity) and the capacity used (``None`` = max load, nothing dropped).
    """
    probs = logits.softmax(dim=-1)  # [T, E]
    gate, expert = probs.max(dim=-1)  # [T], [T]
    onehot = F.one_hot(expert, logits.shape[-1]) * valid[:, None]  # [T, E] (padding: zero row)
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # [T]: earlier tokens first
    if capacity is None:
        capacity = max(int(onehot.sum(0).max()), 1)
    keep = valid & (position < capacity)
    return probs, expert, gate, position, keep, capacity


class SwitchFeedForward(nn.Module):
    """Switch (top-1 mixture-of-experts) feed-forward ``[..., d] -> [..., d]``; see module docstring.

    Options: ``num_experts`` (4), ``capacity_factor`` (1.25, training), ``eval_capacity_factor``
    (None = unlimited), ``aux_loss_weight`` (alpha, 1e-2), ``z_loss_weight`` (0), ``expert``
    (``mlp`` | ``swiglu`` | ``geglu``), ``router_jitter`` (0).
    """

    def __init__(
        self,
        d_model: int,
        mult: float = 4.0,
        dropout: float = 0.0,
        *,
        num_experts: int = 4,
        capacity_factor: float = 1.25,
        eval_capacity_factor: float | None = None,
        aux_loss_weight: float = 1e-2,
        z_loss_weight: float = 0.0,
        expert: str = "mlp",
        router_jitter: float = 0.0,
    ):
        super().__init__()
        if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
            raise ValueError(f"moe num_experts must be a positive int, got {num_experts!r}")
        for name, cf in (("capacity_factor", capacity_factor), ("eval_capacity_factor", eval_capacity_factor)):
            if cf is not None and not (isinstance(cf, (int, float)) and cf > 0):
                raise ValueError(f"moe {name} must be a positive number or None, got {cf!r}")
        for name, w in (
            ("aux_loss_weight", aux_loss_weight),
            ("z_loss_weight", z_loss_weight),
            ("router_jitter", router_jitter),
        ):
            if not (isinstance(w, (int, float)) and w >= 0):
                raise ValueError(f"moe {name} must be a non-negative number, got {w!r}")
        if expert not in EXPERT_KINDS:
            raise ValueError(f"moe expert must be one of {EXPERT_KINDS}, got {expert!r}")
        self.d_model, self.num_experts, self.expert = d_model, num_experts, expert
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.aux_loss_weight, self.z_loss_weight, self.router_jitter = aux_loss_weight, z_loss_weight, router_jitter
        hidden = int(mult * d_model)
        if expert != "mlp":
            hidden = max(1, int(2 * hidden / 3))
        self.hidden = hidden
        E = num_experts
        self.router = nn.Parameter(torch.empty(E, d_model))  # W_r, kept float32
        self.w1 = nn.Parameter(torch.empty(E, d_model, hidden))
        self.b1 = nn.Parameter(torch.empty(E, hidden))
        if expert != "mlp":
            self.w3 = nn.Parameter(torch.empty(E, d_model, hidden))
            self.b3 = nn.Parameter(torch.empty(E, hidden))
        self.w2 = nn.Parameter(torch.empty(E, hidden, d_model))
        self.b2 = nn.Parameter(torch.empty(E, d_model))
        self.drop = nn.Dropout(dropout)
        self.aux_loss: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.router, 0.0, math.sqrt(0.1 / self.d_model))
        for w, b, fan_in in (
            (self.w1, self.b1, self.d_model),
            (self.w2, self.b2, self.hidden),
            *(((self.w3, self.b3, self.d_model),) if self.expert != "mlp" else ()),
        ):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def capacity(self, n_tokens: int) -> int | None:
        """Slots per expert for ``n_tokens`` real tokens (None: unlimited)."""
        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        return None if cf is None else max(1, math.ceil(cf * n_tokens / self.num_experts))

    def experts(self, h: torch.Tensor) -> torch.Tensor:
        """All experts on their own slots: ``h [E, C, d] -> [E, C, d]``."""
        dt = h.dtype
        a = torch.baddbmm(self.b1.to(dt)[:, None], h, self.w1.to(dt))  # [E, C, hidden]
        if self.expert == "mlp":
            a = F.gelu(a)
        else:
            act = F.silu if self.expert == "swiglu" else F.gelu
            a = act(a) * torch.baddbmm(self.b3.to(dt)[:, None], h, self.w3.to(dt))
        return torch.baddbmm(self.b2.to(dt)[:, None], self.drop(a), self.w2.to(dt))  # [E, C, d]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        shape, E = x.shape, self.num_experts
        xf = x.reshape(-1, shape[-1])  # [T, d]
        T = xf.shape[0]
        valid = torch.ones(T, dtype=torch.bool, device=x.device) if mask is None else mask.reshape(-1).bool()
        n_real = T if mask is None else int(valid.sum())

        r_dtype = torch.promote_types(x.dtype, torch.float32)  # float32 at least
        r_in = xf.to(r_dtype)
        if self.training and self.router_jitter > 0:
            r_in = r_in * torch.empty_like(r_in).uniform_(1 - self.router_jitter, 1 + self.router_jitter)
        logits = r_in @ self.router.to(r_dtype).t()  # [T, E] float32
        probs, expert, gate, position, keep, C = switch_route(logits, valid, self.capacity(n_real))

        # auxiliary losses over real tokens (eq. 4-6; ST-MoE eq. 5)
        vf = valid.to(r_dtype)
        denom = vf.sum().clamp_min(1.0)
        f = (F.one_hot(expert, E).to(r_dtype) * vf[:, None]).sum(0) / denom  # [E] dispatch fractions
        P = (probs * vf[:, None]).sum(0) / denom  # [E] mean router prob
        self.load_balancing_loss = self.aux_loss_weight * E * (f * P).sum()
        self.z_loss = self.z_loss_weight * (logits.logsumexp(-1).pow(2) * vf).sum() / denom
        self.aux_loss = self.load_balancing_loss + self.z_loss
        self.dropped_fraction = ((valid & ~keep).float().sum() / denom).detach()

        # dispatch: kept token t -> slot expert*C + position; everything else -> a discarded slot E*C
        slot = torch.where(keep, expert * C + position, torch.full_like(expert, E * C))  # [T]
        buf = xf.new_zeros(E * C + 1, shape[-1]).index_add(0, slot, xf)  # [E*C + 1, d]
        out = self.experts(buf[: E * C].view(E, C, -1)).reshape(E * C, -1)  # [E*C, d]
        out = torch.cat([out, out.new_zeros(1, out.shape[-1])])  # slot E*C -> 0
        y = out[slot] * (gate * keep).to(x.dtype)[:, None]  # [T, d]
        return y.reshape(shape)

    def flops(self, n_tokens: int) -> float:
        """Forward FLOPs: router + experts on ``E * C`` slots (``C`` with ``capacity_factor``)."""
        C = self.capacity(n_tokens) or math.ceil(n_tokens / self.num_experts)
        n_mats = 2 if self.expert == "mlp" else 3
        slots = self.num_experts * C
        return float(2 * n_tokens * self.d_model * self.num_experts + 2 * slots * n_mats * self.d_model * self.hidden)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_experts={self.num_experts}, hidden={self.hidden}, expert={self.expert}, "
            f"capacity_factor={self.capacity_factor}, eval_capacity_factor={self.eval_capacity_factor}, "
            f"aux_loss_weight={self.aux_loss_weight}, z_loss_weight={self.z_loss_weight}"
        )
