"""The diagonal SSM as Toeplitz-in-chunk + carried state (:func:`diag_ssm_chunked`), the short causal
FIR of H3's shift SSM (:func:`fir_conv`), the recurrent step (:func:`diag_step`), and the unrolled
references (:mod:`.naive`)."""

from .chunk import (
    _FIR,
    DEFAULT_CHUNK,
    _DiagChunked,
    chunked_backward,
    chunked_forward,
    diag_ssm_chunked,
    fir_chunks,
    fir_chunks_backward,
    fir_conv,
)
from .naive import diag_ssm_naive, fir_conv_naive
from .recurrent import diag_step

TWINS = {_DiagChunked: (diag_ssm_chunked, diag_ssm_naive), _FIR: (fir_conv, fir_conv_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = [
    "diag_ssm_chunked",
    "fir_conv",
    "diag_step",
    "chunked_forward",
    "chunked_backward",
    "fir_chunks",
    "fir_chunks_backward",
    "DEFAULT_CHUNK",
    "diag_ssm_naive",
    "fir_conv_naive",
    "TWINS",
]
