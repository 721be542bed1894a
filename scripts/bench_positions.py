"""Logit position schemes vs plain softmax (SDPA) in one process: forward+backward time and peak memory.

    python scripts/bench_positions.py [--lengths 1024 2048 4096] [--threads 1] [--repeats 2] [--causal]

d_model 256, 4 heads, batch 1, float32, ``softmax`` with ``relpos`` = each scheme (tables owned by
the mixer, default options; ``span``/``max_len`` = the measured length). Ratios are against
softmax without a position term at the same length, measured in the same process. These schemes
are O(N^2) like the attention they modify: the float logit bias ``[1, H, N, N]`` is materialised
(the gathers themselves read ``[B, H, N, R]`` products with ``R <= 2k`` rows), so 16K is out of
reach on a small CPU machine; memory should roughly quadruple when N doubles.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import longseq.mixers as M
from longseq.bench._worker import PeakMemory, _release_free_memory

SCHEMES = [None, "deberta", "deberta_v2", "diet_abs", "diet_rel"]


def fwd_bwd(m, x):
    x = x.detach().requires_grad_(True)
    m(x).sum().backward()
    m.zero_grad(set_to_none=True)


def measure(scheme, L, causal, repeats):
    torch.manual_seed(0)
    relpos = None if scheme is None else {"scheme": scheme}
    if scheme in ("deberta", "diet_rel"):
        relpos["span"] = L
    if scheme == "diet_abs":
        relpos["max_len"] = L
    m = M.build("softmax", 256, num_heads=4, causal=causal, relpos=relpos)
    x = torch.randn(1, L, 256)
    fwd_bwd(m, x[:, :256])                                   # warm-up (thread pools, caches)
    times, peaks = [], []
    for _ in range(repeats):
        _release_free_memory()
        with PeakMemory(torch.device("cpu")) as pm:
            t0 = time.perf_counter()
            fwd_bwd(m, x)
            times.append(time.perf_counter() - t0)
        peaks.append(pm.mb)
    return statistics.median(times), max(peaks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--causal", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'scheme':<12}{'L':>7}{'time s':>9}{'x softmax':>11}{'peak MB':>9}{'x softmax':>11}")
    for L in args.lengths:
        base = None
        for scheme in SCHEMES:
            t, mb = measure(scheme, L, args.causal, args.repeats)
            base = base or (t, max(mb, 1e-9))
            print(f"{scheme or 'softmax':<12}{L:>7}{t:>9.3f}{t / base[0]:>11.2f}{mb:>9.0f}{mb / base[1]:>11.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
