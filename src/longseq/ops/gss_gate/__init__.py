"""GSS's gated output branch in row chunks (:func:`gated_out`) and its dense reference (:func:`gated_out_naive`)."""

from .fused import _GatedOut, gated_out
from .naive import gated_out_naive

TWINS = {_GatedOut: (gated_out, gated_out_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["gated_out", "gated_out_naive", "TWINS"]
