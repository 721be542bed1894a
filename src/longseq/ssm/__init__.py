"""Shared state-space-model machinery: initialisations, discretisation, kernels, FFT convolution.

Mixers (``s4d``, ``dss``, ``h3``, ``gss``, ``s4``, ``s5``) stay thin by building on these modules:

* :mod:`.init`        — diagonal state matrices (S4D-Lin/Inv/LegS/Real, DSS) and log-dt draws.
* :mod:`.discretize`  — zero-order hold and bilinear discretisation of a diagonal SSM.
* :mod:`.kernels`     — the Vandermonde kernel ``K_l = Re sum_n w_n z_n^l`` computed in chunks,
  the diagonal recurrence (state in, state out) and the S4D/DSS kernel modules.
* :mod:`.fftconv`     — causal / bidirectional FFT convolution and the block-wise ("FlashConv")
  convolution that carries the SSM state across blocks.
* :mod:`.hippo`, :mod:`.cauchy`, :mod:`.scan` — HiPPO-LegS and its NPLR/DPLR forms, the
  Cauchy kernel and the parallel scan (used by ``s4`` and ``s5``).

Import the submodules directly (``from longseq.ssm.kernels import vandermonde``); this package
imports nothing on its own so that loading one mixer does not load them all.
"""
