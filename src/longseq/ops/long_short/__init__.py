"""Transformer-LS causal long-short attention (:func:`causal_long_short_attention`, flash-attention
style with a recomputing backward) and its dense single-softmax reference (:mod:`.naive`)."""

from .fused import _CausalLongShort, causal_long_short_attention
from .naive import causal_long_short_attention_naive

TWINS = {_CausalLongShort: (causal_long_short_attention, causal_long_short_attention_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["causal_long_short_attention", "causal_long_short_attention_naive", "TWINS"]
