"""Vandermonde product ``K_l = Re sum_n w_n z_n^l`` (:func:`vandermonde`, chunked real matmuls; the
adjoint :func:`vandermonde_transposed`) and the references with materialised powers (:mod:`.naive`)."""

from .chunk import NEGLIGIBLE, _Vandermonde, powers, vandermonde, vandermonde_transposed
from .naive import vandermonde_naive, vandermonde_transposed_naive

TWINS = {_Vandermonde: (vandermonde, vandermonde_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = [
    "vandermonde",
    "vandermonde_transposed",
    "powers",
    "NEGLIGIBLE",
    "vandermonde_naive",
    "vandermonde_transposed_naive",
    "TWINS",
]
