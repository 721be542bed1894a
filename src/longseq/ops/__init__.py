"""Hand-written kernels ("ops") and their readable references, one folder per op.

The layout follows flash-linear-attention: ``ops/<op>/`` holds ``naive.py`` (the readable
definition, importable, what the tests compare against) beside the fast implementation(s)
(``chunk.py``, ``fused.py``, ``fft.py``, ``recurrent.py``, ``block.py``), and its ``__init__``
exports both plus ``TWINS``: every ``torch.autograd.Function`` of the op mapped to its public entry
point and its naive twin. ``tests/ops/`` ties each pair (values and gradients in float64, a second
backward through a retained graph, a bfloat16 smoke run), and ``tests/ops/test_layout.py`` fails
if a Function lives outside this package or has no twin.

Ops (folder: fast entry points / naive reference):

* ``linear_attention``: chunk-parallel, recurrent, bidirectional / dense kernel matrix;
* ``block_sparse``: sliding-window and block-gather softmax attention / dense masked softmax;
* ``favor``: Performer's FAVOR+ positive features and blocked bidirectional attention;
* ``scan``: chunked parallel scan of ``h_t = a_t h_{t-1} + b_t`` / a loop;
* ``vandermonde``: ``K_l = Re sum_n w_n z_n^l`` in chunked real matmuls / materialised powers;
* ``cauchy``: S4's folded Cauchy sums and the Woodbury + irfft step / dense Cauchy matrix;
* ``fftconv``: FFT convolution (causal, bidirectional, grouped kernels) / direct sums;
* ``diag_ssm``: chunked diagonal SSM and short FIR, the recurrence step / unrolled recurrence;
* ``s5``, ``s4_conv``, ``h3``, ``gss_gate``: the fused cores of those mixers / loops and dense formulas;
* ``long_short``: Transformer-LS causal long-short attention / dense masked softmax;
* ``tree_routing``: Treeformer's root-to-leaf path gathers / index-and-sum loops;
* ``gelu_linear``: GELU -> linear (-> GLU) in row blocks / autograd composition;
* ``hmm``: the scaled HMM forward algorithm (full or low-rank transition) with a hand-written
  backward / the same recursion under autograd;
* ``stack``: Lang's algorithm for the nondeterministic stack (full and windowed) and the
  superposition stack / brute-force enumeration of PDA runs.

Only the two attention ops are imported here (they are light and used by many mixers); import
the others as ``from longseq.ops.<op> import ...`` so that loading one mixer does not load them all.
"""

from __future__ import annotations

import importlib

from .block_sparse import block_gather_attention, dedupe_blocks, local_attention, merge_attention
from .linear_attention import (
    linear_attention_bidirectional,
    linear_attention_chunk,
    linear_attention_naive,
    linear_attention_recurrent,
)

OPS = (
    "linear_attention",
    "block_sparse",
    "favor",
    "scan",
    "vandermonde",
    "cauchy",
    "fftconv",
    "diag_ssm",
    "s5",
    "s4_conv",
    "h3",
    "gss_gate",
    "long_short",
    "tree_routing",
    "gelu_linear",
    "hmm",
    "stack",
)
"""Every op folder of this package."""


def twins() -> dict:
    """``{Function class: (public entry point, naive reference)}`` over every op (imports them all)."""
    out: dict = {}
    for name in OPS:
        out.update(importlib.import_module(f"{__name__}.{name}").TWINS)
    return out


__all__ = [
    "OPS",
    "twins",
    "local_attention",
    "block_gather_attention",
    "merge_attention",
    "dedupe_blocks",
    "linear_attention_naive",
    "linear_attention_chunk",
    "linear_attention_recurrent",
    "linear_attention_bidirectional",
]
