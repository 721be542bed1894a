"""S4's Cauchy sums at the roots of unity (:func:`cauchy_sequences`, :func:`cauchy_roots_of_unity`)
and the Woodbury + irfft step (:func:`woodbury_irfft`), with their direct references (:mod:`.naive`)."""

from .fused import (
    _WoodburyIrfft,
    cauchy_roots_of_unity,
    cauchy_sequences,
    roots_of_unity,
    vandermonde_real,
    woodbury_irfft,
)
from .naive import cauchy_naive, woodbury_irfft_naive

TWINS = {_WoodburyIrfft: (woodbury_irfft, woodbury_irfft_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = [
    "cauchy_sequences",
    "cauchy_roots_of_unity",
    "roots_of_unity",
    "vandermonde_real",
    "woodbury_irfft",
    "cauchy_naive",
    "woodbury_irfft_naive",
    "TWINS",
]
