"""Diagonal linear recurrence ``h_t = a_t h_{t-1} + b_t``: the chunked parallel scan
(:func:`linear_scan`, :func:`lti_scan`) and its reference loop (:func:`linear_scan_naive`)."""

from .chunk import _LinearScan, _LinearScanConst, linear_scan, lti_scan
from .naive import linear_scan_naive

TWINS = {_LinearScan: (linear_scan, linear_scan_naive), _LinearScanConst: (linear_scan, linear_scan_naive)}
"""Each autograd Function of this op -> (its public entry point, the naive reference it is tested against)."""

__all__ = ["linear_scan", "lti_scan", "linear_scan_naive", "TWINS"]
