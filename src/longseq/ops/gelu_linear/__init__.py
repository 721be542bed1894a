"""``linear(GELU(y))`` with a GLU or sigmoid-gate head in row blocks keeping only ``y``
(:func:`gelu_linear`), and the autograd composition it is tested against (:func:`gelu_linear_naive`)."""

from .fused import _GeluLinear, gelu_linear
from .naive import gelu_linear_naive

TWINS = {_GeluLinear: (gelu_linear, gelu_linear_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["gelu_linear", "gelu_linear_naive", "TWINS"]
