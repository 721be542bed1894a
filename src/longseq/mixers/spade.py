"""SPADE: a state space model and local attention side by side in one layer.

Zuo, Liu, Jiao, Charles, Manavoglu, Zhao, Gao 2022, "Efficient Long Sequence Modeling via State
Space Augmented Transformer" (arXiv 2212.08136), the SPADE layer; checked against the official
fairseq code ``microsoft/EfficientLongSequenceModeling: spade-modules/spade_layer.py``.

The bottom layer of a SPADE model feeds the (pre-)normalised input ``h`` to an S4 module and to
local attention in parallel and merges the two:

    g = SSM(h)           (global information, O(N log N))
    l = LocalAttn(h)     (local information, O(N w))
    concat:  y = W_agg [LN_g(g) ; LN_l(l)] + b         W_agg in R^{d x 2d}   (the paper's default)
    add:     y = w LN_g(g) + (1 - w) LN_l(l)          w = ``ssm_weight`` (0.5 in the code)
    stack:   y = LocalAttn(SSM(h))                    (the code's third variant)

The upper layers are plain local attention (the model preset ``spade`` in
:mod:`longseq.models.presets` builds that stack; the block around the mixer adds the residual
and the FFN). This mixer can be placed in any layer.

Decisions:
* The two branches are the registered ``s4`` (default; ``ssm="s4d"`` for S4D) and ``local``
  mixers, built with ``ssm_options`` / the local options. SPADE's S4 has no activation or
  position-wise linear after the kernel (``use_pointwise=False``), so ``s4`` gets
  ``pointwise=False`` unless ``ssm_options`` says otherwise (S4D always has its GLU output).
  The SSM uses one head (channels are independent); the local attention ``num_heads``.
* Positions: SPADE's local attention uses T5 relative-position buckets shared across layers;
  longseq's ``local`` offers RoPE instead (``rope=True``), an option here too (off by default: the
  S4 branch already sees order).
* ``window`` is the local attention's block length (LongT5 radius + 1; SPADE uses 512, here the
  ``local`` default 128). In a causal model each token sees its last ``window`` tokens.
* Recurrent state: the SSM's state and the local attention's rolling KV cache side by side;
  ``step`` costs O(N_state + window) per token.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.validate import check_choice, check_number
from .base import Mixer, build, register, spec
from .local import local_flops

SSMS = ("s4", "s4d")
COMBINES = ("concat", "add", "stack")


def spade_flops(L: int, d: int, h: int, causal: bool, window: int = 128, ssm: str = "s4") -> float:
    ssm_f = spec(ssm).flops(L, d, 1, causal) if spec(ssm).flops else 0.0
    return float(ssm_f + local_flops(L, d, h, causal, window) + 2 * L * 2 * d * d)


@register(
    "spade",
    family="hybrid (state space + local attention)",
    paper="Zuo et al. 2022, Efficient Long Sequence Modeling via State Space Augmented Transformer (SPADE)",
    complexity="O(N log N + N w)",
    causal=True,
    bidirectional=True,
    step=True,
    flops=spade_flops,
)
class SPADE(Mixer):
    """An SSM (S4 or S4D) and sliding-window attention in parallel, merged by concat+projection or a weighted sum."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int = 1,
        causal: bool = False,
        window: int = 128,
        rope: bool = False,
        ssm: str = "s4",
        ssm_options: dict | None = None,
        combine: str = "concat",
        ssm_weight: float = 0.5,
    ) -> None:
        super().__init__(d_model, num_heads=num_heads, causal=causal)
        check_choice("ssm", ssm, SSMS, owner="spade")
        check_choice("combine", combine, COMBINES, owner="spade")
        if ssm_options is not None and not isinstance(ssm_options, dict):
            raise ValueError(f"spade: ssm_options must be a dict of {ssm} options, got {ssm_options!r}")
        check_number("ssm_weight", ssm_weight, min=0.0, max=1.0, owner="spade")
        opts = {"pointwise": False} if ssm == "s4" else {}
        opts.update(ssm_options or {})
        self.combine, self.ssm_weight, self.window = combine, float(ssm_weight), window
        self.ssm = build(ssm, d_model, num_heads=1, causal=causal, **opts)
        self.local = build("local", d_model, num_heads=num_heads, causal=causal, window=window, rope=rope)
        if combine != "stack":
            self.norm_global = nn.LayerNorm(d_model)
            self.norm_local = nn.LayerNorm(d_model)
        if combine == "concat":
            self.aggregate = nn.Linear(2 * d_model, d_model)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, combine={self.combine!r}"

    def _merge(self, g: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        """``g, l [B, L, d]`` (SSM and local outputs) -> ``[B, L, d]``."""
        g, l = self.norm_global(g), self.norm_local(l)
        if self.combine == "concat":
            return self.aggregate(torch.cat([g, l], -1))
        return self.ssm_weight * g + (1.0 - self.ssm_weight) * l

    def _forward(self, x, mask, state, return_state):
        if state is None:
            g = self.ssm(x, mask)  # [B, L, d]
            l = self.local(g if self.combine == "stack" else x, mask)
            return (l if self.combine == "stack" else self._merge(g, l)), None
        g, s_ssm = self.ssm(x, state=state["ssm"], return_state=True)
        l, s_loc = self.local(g if self.combine == "stack" else x, state=state["local"], return_state=True)
        y = l if self.combine == "stack" else self._merge(g, l)
        return y, {"ssm": s_ssm, "local": s_loc}

    def _step(self, x_t, state):
        g, s_ssm = self.ssm.step(x_t, state["ssm"])  # [B, d]
        l, s_loc = self.local.step(g if self.combine == "stack" else x_t, state["local"])
        y = l if self.combine == "stack" else self._merge(g, l)
        return y, {"ssm": s_ssm, "local": s_loc}

    def _init_state(self, batch_size, device, dtype):
        return {
            "ssm": self.ssm.init_state(batch_size, device, dtype),
            "local": self.local.init_state(batch_size, device, dtype),
        }

    def state_size(self, seq_len):
        return self.ssm.state_size(seq_len) + self.local.state_size(seq_len)
