"""Parameterisation helpers of the state-space mixers: initialisations, discretisation, kernel modules.

* :mod:`.init`       — diagonal state matrices (S4D-Lin/Inv/LegS/Real, DSS) and log-dt draws.
* :mod:`.discretize` — zero-order hold and bilinear discretisation of a diagonal SSM.
* :mod:`.hippo`      — HiPPO-LegS and its NPLR/DPLR forms (S4, S5 inits).
* :mod:`.kernels`    — the S4D / DSS / GSS kernel modules (parameters -> modes ``w, log z``).

The kernels that compute with these parameters (Vandermonde products, Cauchy sums, FFT
convolution, the chunked diagonal SSM, the parallel scan) are ops: :mod:`longseq.ops`.
Import the submodules directly; this package imports nothing on its own.
"""
