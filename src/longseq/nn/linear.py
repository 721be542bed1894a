"""``make_linear``: one factory for the linear layers a model may use for its projections and
feed-forward matrices -- ``dense`` (``torch.nn.Linear``), ``tensor_chain`` (Anthe's tensor-train
factorisation, :mod:`longseq.nn.tensor_chain`) and ``butterfly`` (Pixelfly's flat block butterfly
+ low rank, :mod:`longseq.nn.butterfly_linear`).

Every layer maps ``[..., d_in] -> [..., d_out]``; :func:`linear_flops` and
:func:`linear_parameters` report forward FLOPs and parameter counts for any of them.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .butterfly_linear import ButterflyLinear
from .tensor_chain import TensorChainLinear

__all__ = ["LINEAR_KINDS", "ConcatLinear", "make_linear", "make_fused_linear", "linear_flops", "linear_parameters"]


def _classes() -> dict[str, type[nn.Module]]:
    return {"dense": nn.Linear, "butterfly": ButterflyLinear, "tensor_chain": TensorChainLinear}


LINEAR_KINDS = tuple(_classes())


def make_linear(kind: str, d_in: int, d_out: int, bias: bool = True, **opts) -> nn.Module:
    """A ``d_in -> d_out`` linear layer of ``kind``; ``opts`` are that kind's keyword options
    (``dense`` takes none)."""
    classes = _classes()
    if kind not in classes:
        raise ValueError(f"unknown linear kind {kind!r}; choose one of: {', '.join(classes)}")
    cls = classes[kind]
    allowed = (
        []
        if cls is nn.Linear
        else [n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY]
    )
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for linear kind {kind!r}; allowed: {allowed or 'none'}")
    return cls(d_in, d_out, bias=bias, **opts)


class ConcatLinear(nn.Module):
    """Several ``d_in -> d_out_k`` layers applied to the same input, outputs concatenated: a fused
    projection (e.g. q/k/v) whose parts are factorised separately, as the papers do."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x):
        return torch.cat([p(x) for p in self.parts], dim=-1)

    def flops(self, n_tokens: int) -> float:
        return sum(linear_flops(p, n_tokens) for p in self.parts)


def make_fused_linear(kind: str, d_in: int, d_outs: list[int], bias: bool = True, **opts) -> nn.Module:
    """``d_in -> sum(d_outs)``: one ``nn.Linear`` for ``dense`` (the usual fused q/k/v weight), else a
    :class:`ConcatLinear` of one ``kind`` layer per part."""
    if kind == "dense":
        make_linear(kind, d_in, 1, bias, **opts)  # validates the options
        return nn.Linear(d_in, sum(d_outs), bias=bias)
    return ConcatLinear([make_linear(kind, d_in, d, bias, **opts) for d in d_outs])


def linear_parameters(layer: nn.Module) -> int:
    return sum(p.numel() for p in layer.parameters())


def linear_flops(layer: nn.Module, n_tokens: int) -> float:
    """Forward FLOPs of ``layer`` on ``n_tokens`` inputs (2 per multiply-add, + bias adds)."""
    if isinstance(layer, nn.Linear):
        bias = n_tokens * layer.out_features if layer.bias is not None else 0
        return float(2 * n_tokens * layer.in_features * layer.out_features + bias)
    return layer.flops(n_tokens)
