"""What a benchmark worker measures with, apart from the models: peak memory (RSS high-water mark,
exact-heap mode), timing loops and summaries. Below :mod:`._worker` and :mod:`.speed`, so the
drivers and the worker-side measure functions of every benchmark share it without import cycles."""

from __future__ import annotations

import ctypes
import gc
import math
import os
import resource
import sys
import time

RESULT_PREFIX = "@@LONGSEQ_BENCH@@"
EXACT_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
"""Environment of a ``"memory"`` worker: glibc serves every block of 64 KB or more by its own mmap."""

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float64": "float64",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


# ---------------------------------------------------------------------------- memory probes
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Give memory freed by earlier calls back to the OS, so it cannot hide the next call's peak."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc; absent elsewhere
    except (OSError, AttributeError):
        pass


def _maxrss_bytes() -> int:
    """The resident-set high-water mark: ``VmHWM`` (what ``clear_refs`` resets; ``getrusage``'s
    ``ru_maxrss`` can keep an older, larger peak), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * (1 if sys.platform == "darwin" else 1024)


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.mb``: peak extra memory of the block in MB."""

    def __init__(self, device):
        self.device = device
        self.mb = None
        self.method = None

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda_max_memory_allocated"
        else:
            self.method = "rss_hwm_reset" if _reset_hwm() else "ru_maxrss"
            self._base = _rss_bytes()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _maxrss_bytes()
        self.mb = max(0, peak - self._base) / 2**20
        return False


# ---------------------------------------------------------------------------- timing
def summarize(times_s: list[float]) -> dict:
    """Median, quartiles, min and max (in ms) of a list of wall times (in s)."""
    ms = sorted(t * 1e3 for t in times_s)
    n = len(ms)

    def q(p):  # linear interpolation between order statistics (numpy's default)
        x = p * (n - 1)
        lo, hi = math.floor(x), math.ceil(x)
        return ms[lo] + (ms[hi] - ms[lo]) * (x - lo)

    return {
        "median": q(0.5),
        "q25": q(0.25),
        "q75": q(0.75),
        "min": ms[0],
        "max": ms[-1],
        "n": n,
        "all": [round(t, 4) for t in ms],
    }


def _timed(fn, sync, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times
