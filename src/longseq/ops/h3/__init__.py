"""H3's training path as one autograd function (:func:`h3_core`) and its unrolled reference (:func:`h3_core_naive`)."""

from .fused import _H3Core, h3_core
from .naive import h3_core_naive

TWINS = {_H3Core: (h3_core, h3_core_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["h3_core", "h3_core_naive", "TWINS"]
