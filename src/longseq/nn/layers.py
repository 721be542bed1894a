"""Norms, feed-forward layers and the sinusoidal table used by the model blocks."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from .linear import make_linear


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): ``x / rms(x) * g``."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str | None, d: int) -> nn.Module:
    if kind in (None, "none"):
        return nn.Identity()
    if kind == "layernorm":
        return nn.LayerNorm(d)
    if kind == "rmsnorm":
        return RMSNorm(d)
    raise ValueError(f"unknown norm {kind!r}; choose one of: layernorm, rmsnorm, none")


class FeedForward(nn.Module):
    """Position-wise feed-forward: ``mlp`` = W2 act(W1 x); ``swiglu``/``geglu`` = W2 (act(W1 x) * W3 x)
    (Shazeer 2020, "GLU Variants Improve Transformer"). GLU hidden width is 2/3 of the MLP's so the
    parameter count matches. ``moe`` = Switch Transformer top-1 mixture of experts
    (:class:`longseq.nn.moe.SwitchFeedForward`; exposes ``aux_loss`` after each forward).

    ``options``: for ``moe`` the options of ``SwitchFeedForward`` (``num_experts``, ``capacity_factor``,
    ...); for the other kinds ``linear`` (``dense`` | ``butterfly`` | ``tensor_chain``, see
    :func:`longseq.nn.linear.make_linear`) and that linear kind's options, applied to W1, W2 (and W3)."""

    KINDS = ("mlp", "swiglu", "geglu", "moe")

    def __init__(
        self, d_model: int, kind: str = "mlp", mult: float = 4.0, dropout: float = 0.0, options: dict | None = None
    ):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown feed-forward {kind!r}; choose one of: {', '.join(self.KINDS)}")
        self.kind = kind
        options = dict(options or {})
        if kind == "moe":
            from .moe import SwitchFeedForward

            allowed = [
                n for n, p in inspect.signature(SwitchFeedForward).parameters.items() if p.kind is p.KEYWORD_ONLY
            ]
            unknown = sorted(set(options) - set(allowed))
            if unknown:
                raise ValueError(f"unknown ffn option(s) {unknown} for ffn='moe'; allowed: {allowed}")
            self.moe = SwitchFeedForward(d_model, mult, dropout, **options)
            return
        linear = options.pop("linear", "dense")
        hidden = int(mult * d_model)
        if kind != "mlp":
            hidden = max(1, int(2 * hidden / 3))
            self.w3 = make_linear(linear, d_model, hidden, True, **options)
        self.w1 = make_linear(linear, d_model, hidden, True, **options)
        self.w2 = make_linear(linear, hidden, d_model, True, **options)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [..., d]``; ``mask`` (True = real token) is used by ``moe`` routing only."""
        if self.kind == "moe":
            return self.moe(x, mask)
        if self.kind == "mlp":
            h = F.gelu(self.w1(x))
        elif self.kind == "swiglu":
            h = F.silu(self.w1(x)) * self.w3(x)
        else:
            h = F.gelu(self.w1(x)) * self.w3(x)
        return self.w2(self.drop(h))


def sinusoidal_table(length: int, d: int, offset: int = 0, device=None, dtype=torch.float32) -> torch.Tensor:
    """Vaswani et al. 2017 sec. 3.5: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...). ``[L, d]``."""
    pos = torch.arange(offset, offset + length, device=device, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float64) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d, device=device, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe.to(dtype)
