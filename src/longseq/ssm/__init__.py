"""Shared state-space-model machinery: initialisations, discretisation, kernels, FFT convolution.

Mixers (``s4d``, ``dss``, ``h3``, ``gss``, ``s4``, ``s5``) stay thin by building on these modules:

* :mod:`.init`        — diagonal state matrices (S4D-Lin/Inv/LegS/Real, DSS) and log-dt draws.
* :mod:`.discretize`  — zero-order hold and bilinear discretisation of a diagonal SSM.
* :mod:`.vandermonde` — THE Vandermonde product ``K_l = Re sum_n w_n z_n^l`` (real matmuls over
  chunks, modes per channel or shared, decayed chunks skipped, a backward that keeps only ``w``
  and ``log z``) and the state after a block; used by every kernel below and by S4's Cauchy sums.
* :mod:`.kernels`     — the diagonal recurrence step and the S4D / DSS / GSS kernel modules.
* :mod:`.fftconv`     — THE FFT convolution (causal / bidirectional, skip as lag-0 tap, channel
  groups, spectra recomputed in the backward) and the block-wise ("FlashConv") convolution that
  carries the SSM state across blocks.
* :mod:`.chunked`     — the diagonal SSM as Toeplitz-in-chunk + carried state (channel groups,
  backward keeps only the input) and the short FIR of H3's shift SSM.
* :mod:`.hippo`, :mod:`.cauchy`, :mod:`.scan` — HiPPO-LegS and its NPLR/DPLR forms, the
  Cauchy kernel and the parallel scan (used by ``s4`` and ``s5``).

Import the submodules directly (``from longseq.ssm.vandermonde import vandermonde``); this package
imports nothing on its own so that loading one mixer does not load them all.
"""
