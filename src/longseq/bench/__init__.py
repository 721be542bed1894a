"""Benchmarks on the user's own machine: which mixer is fastest and leanest at my length?

* :func:`run_speed` — forward / forward+backward time, peak memory, FLOPs and GFLOP/s of longseq
  mixers across lengths, each configuration in a fresh process, next to exact attention.
* :func:`run_peers` — the same for the peer packages a user would otherwise install
  (performer-pytorch, linformer, nystrom-attention, local-attention, fast-transformers, torch
  SDPA), each next to its longseq twin.
* :func:`run_generate` — prefill time and decoding tokens/s of a small causal LM per mixer.
* :func:`run_ratios` — speed-ups over exact attention at one length, the baseline and each mixer
  timed in alternation over several rounds (robust to a machine whose speed drifts).
* :func:`write_report` — ``results.json``, ``results.md`` and the log-log plots.

The CLI front end is ``longseq bench {speed,peers,generate,ratios}``.
"""

from .generate import GenerateConfig, run_generate
from .peers import PEERS, available_peers, run_peers
from .ratios import RatioConfig, format_ratios, run_ratios, write_ratios
from .report import format_markdown, format_table, table_rows, write_report
from .speed import SpeedConfig, Target, measure_matmul_peak, run_speed, run_targets

__all__ = [
    "SpeedConfig",
    "Target",
    "run_speed",
    "run_targets",
    "measure_matmul_peak",
    "PEERS",
    "available_peers",
    "run_peers",
    "GenerateConfig",
    "run_generate",
    "format_table",
    "format_markdown",
    "table_rows",
    "write_report",
    "RatioConfig",
    "run_ratios",
    "format_ratios",
    "write_ratios",
]
