"""FFT convolution of sequences with SSM kernels (:mod:`.fft`: causal, bidirectional, channel groups,
block-wise with a carried state) and the direct Toeplitz sums it is tested against (:mod:`.naive`)."""

from .fft import (
    _FFTConv,
    _GroupedKernelConv,
    circular_kernel,
    diag_ssm_conv,
    fast_fft_size,
    fft_conv,
    grouped_kernel_conv,
    kernel_conv,
    ssm_apply,
    with_skip,
)
from .naive import conv_naive, toeplitz_naive

TWINS = {_FFTConv: (kernel_conv, conv_naive), _GroupedKernelConv: (grouped_kernel_conv, conv_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = [
    "kernel_conv",
    "grouped_kernel_conv",
    "fft_conv",
    "diag_ssm_conv",
    "ssm_apply",
    "circular_kernel",
    "with_skip",
    "fast_fft_size",
    "conv_naive",
    "toeplitz_naive",
    "TWINS",
]
