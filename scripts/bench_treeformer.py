"""Treeformer vs softmax (SDPA) in one process: forward+backward time and peak memory.

    MALLOC_MMAP_THRESHOLD_=262144 python scripts/bench_treeformer.py [--lengths 4096 16384]

(the glibc setting returns freed large blocks to the OS at once, so that the RSS peak is the
allocation peak rather than what the allocator kept from earlier calls).

d_model 256, 4 heads, batch 1, float32. Each mixer is warmed up at length 1024, then one call
per ``--repeats`` at the measured length gives the median wall time and the largest peak extra
RSS (see ``longseq.bench._worker.PeakMemory``). Ratios are against softmax at the same length,
measured in the same process, so machine load affects both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import longseq.mixers as M
from longseq.bench._worker import PeakMemory, _release_free_memory

CONFIGS = [
    ("softmax", {}),
    ("treeformer_tc", {"depth": 8}),
    ("treeformer_tf", {"depth": 6}),
    ("treeformer_tf", "leaf64"),       # depth = log2(L / 64): leaves of ~64 keys
]


def fwd_bwd(m, x):
    x = x.detach().requires_grad_(True)
    m(x).sum().backward()
    m.zero_grad(set_to_none=True)


def measure(name, opts, L, repeats):
    torch.manual_seed(0)
    if opts == "leaf64":
        opts = {"depth": max(1, (L // 64).bit_length() - 1)}
    m = M.build(name, 256, num_heads=4, **opts)
    x = torch.randn(1, L, 256)
    fwd_bwd(m, x[:, :1024])                                 # warm-up (thread pools, caches)
    times, peaks = [], []
    for _ in range(repeats):
        _release_free_memory()
        with PeakMemory(torch.device("cpu")) as pm:
            t0 = time.perf_counter()
            fwd_bwd(m, x)
            times.append(time.perf_counter() - t0)
        peaks.append(pm.mb)
    return statistics.median(times), max(peaks), opts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'L':>6} {'mixer':>14} {'options':>14} {'time s':>8} {'peak MB':>9} {'t/softmax':>9} {'mem/softmax':>11}")
    for L in args.lengths:
        base = None
        for name, opts in CONFIGS:
            t, mb, used = measure(name, opts, L, args.repeats)
            base = base or (t, mb)
            print(f"{L:>6} {name:>14} {str(used):>14} {t:8.2f} {mb:9.0f} {t / base[0]:9.2f} {mb / base[1]:11.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
