"""S4's DPLR kernel (:func:`dplr_kernel`) and convolution per channel block (:func:`s4_conv`), and the
dense references (:func:`s4_kernel_naive`, :func:`s4_conv_naive`)."""

from .fused import _S4Conv, dplr_kernel, s4_conv
from .naive import s4_conv_naive, s4_kernel_naive

TWINS = {_S4Conv: (s4_conv, s4_conv_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["s4_conv", "dplr_kernel", "s4_conv_naive", "s4_kernel_naive", "TWINS"]
