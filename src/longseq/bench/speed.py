"""Speed and memory of token mixers across sequence lengths, each measurement in a fresh process.

    from longseq.bench import SpeedConfig, run_speed, write_report
    res = run_speed(["softmax", "linear"], SpeedConfig(lengths=[1024, 4096], causal=True))
    write_report(res, "bench-out")          # results.json, results.md, speed.png, memory.png

For every target (a longseq mixer, or a peer implementation, see :mod:`longseq.bench.peers`)
and every length, in increasing order, a subprocess (:mod:`longseq.bench._worker`) measures
forward time (``no_grad``), forward+backward time (gradients of the input and all parameters),
their medians and quartiles over ``repeats`` runs after ``warmup`` runs, and the peak memory of
a forward and of a forward+backward (in a second fresh process, after a warm-up call; see
:mod:`longseq.bench._worker` for how CPU memory is measured). A target stops at the first length
that exceeds the time budget (median seconds per call; forward+backward when measured) or the memory budget (MB),
that fails (error, out of memory, crash, timeout), or whose time or memory *predicted* from the
last two lengths (growth exponent clipped to [1, 2]) exceeds a budget; the reason is recorded
and the longer lengths are listed as skipped. Analytic FLOPs come from ``spec.flops``;
achieved GFLOP/s are reported next to the machine's fp32 matmul GFLOP/s measured in the same run
(forward+backward counted as 3x the forward FLOPs).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from . import _worker
from ._measure import RESULT_PREFIX
from .report import label

__all__ = [
    "SpeedConfig",
    "Target",
    "run_speed",
    "run_targets",
    "measure_matmul_peak",
    "run_job",
    "mixer_targets",
    "machine_info",
    "SCHEMA",
]

SCHEMA = "longseq.bench/1"
DEFAULT_LENGTHS = (1024, 2048, 4096, 8192, 16384)
# Options through which a mixer with a learned length-dependent part (Linformer's projection)
# is told the sequence length; the benchmark sets them to L unless the user did.
LENGTH_OPTIONS = ("max_len", "seq_len", "max_seq_len", "max_length")


@dataclass
class SpeedConfig:
    """Settings shared by all measurements of a run (see ``longseq bench speed --help``)."""

    lengths: list[int] = field(default_factory=lambda: list(DEFAULT_LENGTHS))
    batch: int = 1
    d_model: int = 256
    heads: int = 4
    causal: bool = False
    dtype: str = "float32"
    backward: bool = True
    repeats: int = 5
    warmup: int = 1
    memory_repeats: int = 1  # peak memory: median of this many calls after a warm-up
    time_budget: float | None = 30.0  # seconds per measured call
    memory_budget: float | None = None  # MB of peak extra memory
    threads: int | None = None  # torch.set_num_threads in each worker; None = torch default
    device: str = "auto"  # "auto" = cuda when available, else cpu
    seed: int = 0
    # False runs every measurement in this process instead of a fresh one: fast (tests), but
    # the peak memory then depends on what ran before.
    isolate: bool = True
    matmul_n: int | None = None  # size of the peak-matmul probe (None: 1024 CPU, 4096 CUDA)

    def __post_init__(self):
        if not self.lengths or any(int(L) < 1 for L in self.lengths):
            raise ValueError(f"lengths must be positive integers, got {self.lengths!r}")
        self.lengths = sorted({int(L) for L in self.lengths})
        for name in ("batch", "d_model", "heads", "repeats", "memory_repeats"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        if self.dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise ValueError(f"dtype must be one of float32, float64, bfloat16, float16; got {self.dtype!r}")
        for name in ("time_budget", "memory_budget"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no budget), got {v!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {self.device!r}")

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Target:
    """One thing to measure: a longseq mixer (``source="mixer"``) or a peer adapter (``"peer"``)."""

    name: str
    source: str = "mixer"
    options: dict = field(default_factory=dict)
    twin: str | None = None  # peers: the longseq mixer they are compared with
    flops: Callable[..., float] | None = None  # flops(L, d_model, heads, causal) per sequence
    skip_reason: str | None = None  # set when the target cannot run in this config
    twin_options: dict = field(default_factory=dict)  # peers: the twin's options (for its FLOPs)
    note: str = ""  # e.g. how a peer's settings map to its twin's


# ---------------------------------------------------------------------------- subprocess
def run_job(job: dict, timeout: float | None = None, isolate: bool = True) -> dict:
    """Run one worker job in a fresh interpreter and return its JSON result (never raises)."""
    if not isolate:
        return json.loads(json.dumps(_worker.run(job)))
    cmd = worker_command(job)
    env = _worker_env()
    if job.get("measure") == "memory":  # exact heap: see longseq.bench._worker
        env |= _worker.EXACT_HEAP_ENV
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"worker killed after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            res = json.loads(line[len(RESULT_PREFIX) :])
            res["worker_s"] = round(time.perf_counter() - t0, 3)
            return res
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit code {proc.returncode}"
    return {"status": "crashed", "error": f"worker {why}" + (": " + " | ".join(tail) if tail else "")}


def worker_command(job: dict) -> list[str]:
    """The worker's command line. ``-c`` and an import rather than ``-m longseq.bench._worker``:
    the package imports ``_worker`` first, and ``-m`` then prints runpy's "found in sys.modules"
    warning on stderr, which became the last line of every crash report."""
    return [
        sys.executable,
        "-c",
        "import sys; from longseq.bench._worker import main; sys.exit(main(sys.argv[1:]))",
        json.dumps(job),
    ]


def run_module_job(job: dict, timeout: float | None = None, isolate: bool = True) -> dict:
    """A ``"module"`` job: in-process both at once; isolated, timing in one fresh worker and
    peak memory in another (with an exact heap, see :mod:`longseq.bench._worker`)."""
    if not isolate:
        return run_job(job, timeout, isolate)
    out = run_job(job | {"measure": "time"}, timeout, isolate)
    if out.get("status") != "ok" or out.get("over_time_budget"):
        return out
    mem = run_job(job | {"measure": "memory"}, timeout, isolate)
    if mem.get("status") != "ok":
        return mem | {k: v for k, v in out.items() if k.endswith("_ms")}
    return (
        out
        | {k: v for k, v in mem.items() if k.startswith("peak_") or k in ("memory_method", "finite")}
        | {"worker_s": round(out.get("worker_s", 0) + mem.get("worker_s", 0), 3)}
    )


def _worker_env() -> dict:
    """The parent's environment, with this package importable even when not installed."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _base_job(cfg: SpeedConfig, device: str) -> dict:
    return {
        "batch": cfg.batch,
        "d_model": cfg.d_model,
        "heads": cfg.heads,
        "causal": cfg.causal,
        "dtype": cfg.dtype,
        "backward": cfg.backward,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "memory_repeats": cfg.memory_repeats,
        "threads": cfg.threads,
        "device": device,
        "seed": cfg.seed,
        "time_budget": cfg.time_budget,
    }


def _job_timeout(cfg: SpeedConfig) -> float | None:
    """Wall-clock limit of one worker: every call within budget, plus interpreter start-up."""
    if cfg.time_budget is None:
        return None
    calls = (cfg.warmup + cfg.repeats + 1 + cfg.memory_repeats) * (2 if cfg.backward else 1)
    return 60.0 + 2 * calls * cfg.time_budget


# ---------------------------------------------------------------------------- machine
def measure_matmul_peak(
    device: str = "cpu", threads: int | None = None, n: int | None = None, isolate: bool = True
) -> dict:
    """fp32 ``n x n`` matmul GFLOP/s (best of 10) in a fresh worker: the practical compute peak."""
    n = n or (4096 if device.startswith("cuda") else 1024)
    return run_job({"kind": "matmul", "device": device, "threads": threads, "n": n}, 300, isolate)


def machine_info(device: str, threads: int | None) -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    try:
        from .._version import __version__

        info["longseq"] = __version__
    except ImportError:
        pass
    return info


# ---------------------------------------------------------------------------- targets
def mixer_targets(names: list[str] | None, causal: bool, options: dict | None = None) -> list[Target]:
    """Targets for longseq mixers (``None`` = all registered); unsupported modes are marked skipped."""
    from .. import mixers

    options = options or {}
    names = mixers.names() if names is None else names
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options given for mixers that are not benchmarked: {unknown}")
    targets = []
    for n in names:
        s = mixers.spec(n)  # ValueError listing the available names if unknown
        skip = None
        if causal and not s.causal:
            skip = "no causal mode (bidirectional only)"
        elif not causal and not s.bidirectional:
            skip = "no bidirectional mode (causal only): run with --causal"
        targets.append(Target(n, "mixer", dict(options.get(n, {})), flops=s.flops, skip_reason=skip))
    return targets


def _options_for_length(target: Target, L: int) -> dict:
    opts = dict(target.options)
    if target.source == "mixer":
        from .. import mixers

        allowed = mixers.spec(target.name).cls.options()
        for k in LENGTH_OPTIONS:
            if k in allowed and k not in opts:
                opts[k] = L
    return opts


# ---------------------------------------------------------------------------- the run
def _primary(row: dict, backward: bool) -> tuple[float | None, float | None]:
    """(median ms, peak MB) of the measurement that budgets and ratios use."""
    key, mem = ("fwdbwd_ms", "peak_fwdbwd_mb") if backward and "fwdbwd_ms" in row else ("fwd_ms", "peak_fwd_mb")
    t = row.get(key)
    return (t["median"] if t else None), row.get(mem)


def _predict(history: list[tuple[int, float]], L: int) -> float | None:
    """Extrapolate a cost to length L from the last two (length, cost) points, exponent in [1, 2]."""
    if len(history) < 2:
        return None
    (L0, c0), (L1, c1) = history[-2], history[-1]
    if c0 <= 0 or c1 <= 0 or L1 == L0:
        return None
    p = min(2.0, max(1.0, math.log(c1 / c0) / math.log(L1 / L0)))
    return c1 * (L / L1) ** p


def run_targets(
    targets: list[Target],
    cfg: SpeedConfig,
    *,
    kind: str = "speed",
    log: Callable[[str], None] | None = None,
    matmul: bool = True,
    on_update: Callable[[dict], None] | None = None,
) -> dict:
    """Measure every target at every length of ``cfg`` (after the fp32 matmul peak unless
    ``matmul=False``); the returned dict is what ``results.json`` holds. ``on_update(res)`` is
    called after each measurement (the CLI saves partial results with it)."""
    log = log or logging.getLogger(__name__).info  # the CLI shows INFO on stderr
    device = cfg.resolved_device()
    res = {
        "schema": SCHEMA,
        "kind": kind,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": asdict(cfg) | {"device": device},
        "machine": machine_info(device, cfg.threads),
        "targets": [],
        "rows": [],
    }
    if matmul:
        mm = measure_matmul_peak(device, cfg.threads, cfg.matmul_n, cfg.isolate)
        res["machine"]["matmul_fp32_gflops"] = mm.get("gflops")
        res["machine"]["matmul"] = mm
        if mm.get("gflops"):
            log(f"fp32 matmul peak: {mm['gflops']:.1f} GFLOP/s (n={mm['n']})")
    peak = res["machine"].get("matmul_fp32_gflops")
    base, timeout = _base_job(cfg, device), _job_timeout(cfg)
    for t in targets:
        res["targets"].append(
            {
                "name": t.name,
                "source": t.source,
                "twin": t.twin,
                "options": t.options,
                "skip_reason": t.skip_reason,
                "note": t.note,
                "stopped": None,
            }
        )
        stop, t_hist, m_hist = t.skip_reason, [], []
        for L in cfg.lengths:
            row = {"name": t.name, "source": t.source, "twin": t.twin, "L": L}
            if stop is None:
                stop = _predicted_stop(cfg, t_hist, m_hist, L)
            if stop is not None:
                res["rows"].append(row | {"status": "skipped", "reason": stop})
                continue
            opts = _options_for_length(t, L)
            job = base | {"kind": "module", "source": t.source, "name": t.name, "L": L, "options": opts}
            out = run_module_job(job, timeout, cfg.isolate)
            row |= {"options": opts} | out
            _add_flops(row, t, cfg, peak)
            stop = _measured_stop(row, cfg)
            ms, mb = _primary(row, cfg.backward)
            if row["status"] == "ok" and ms is not None and mb is not None:
                t_hist.append((L, ms))
                m_hist.append((L, mb))
            if stop and row["status"] == "ok":
                row["reason"] = stop
            res["rows"].append(row)
            log(_progress_line(row, cfg.backward))
            if on_update:
                _add_ratios(res, cfg.backward)
                on_update(res)
        res["targets"][-1]["stopped"] = stop
    _add_ratios(res, cfg.backward)
    return res


def _measured_stop(row: dict, cfg: SpeedConfig) -> str | None:
    """Why a target stops after this measurement (failure or budget exceeded), else None."""
    L = row["L"]
    if row["status"] != "ok":
        return f"{row['status']} at L={L}: {row.get('error', '')}".strip()
    ms, mb = _primary(row, cfg.backward)
    if row.get("over_time_budget") or (cfg.time_budget and ms is not None and ms / 1e3 > cfg.time_budget):
        return f"time budget: {ms / 1e3:.3g} s per call at L={L} > {cfg.time_budget:g} s"
    if cfg.memory_budget and mb is not None and mb > cfg.memory_budget:
        return f"memory budget: {mb:.0f} MB at L={L} > {cfg.memory_budget:g} MB"
    return None


def _predicted_stop(cfg: SpeedConfig, t_hist, m_hist, L) -> str | None:
    if cfg.time_budget:
        ms = _predict(t_hist, L)
        if ms is not None and ms / 1e3 > cfg.time_budget:
            return f"time budget: predicted {ms / 1e3:.3g} s per call at L={L} > {cfg.time_budget:g} s"
    if cfg.memory_budget:
        mb = _predict(m_hist, L)
        if mb is not None and mb > cfg.memory_budget:
            return f"memory budget: predicted {mb:.0f} MB at L={L} > {cfg.memory_budget:g} MB"
    return None


def _flops_kwargs(fn: Callable, options: dict) -> dict:
    """The options a FLOPs function takes by the same name (``window``, ``k``, ``num_features``...)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in options.items() if k in params and k not in ("L", "d", "h", "causal")}


def _add_flops(row: dict, t: Target, cfg: SpeedConfig, peak: float | None) -> None:
    """Analytic forward FLOPs (batch included; for peers, the twin's formula with the mapped
    setting) and the achieved GFLOP/s."""
    flops = None
    if t.flops is not None:
        opts = t.twin_options if t.source == "peer" else row.get("options", {})
        try:
            flops = (
                float(t.flops(row["L"], cfg.d_model, cfg.heads, cfg.causal, **_flops_kwargs(t.flops, opts))) * cfg.batch
            )
        except Exception as e:  # a broken flops function must not lose the timing
            row["flops_error"] = f"{type(e).__name__}: {e}"
    row["flops_fwd"] = flops
    for key, mult, out in (("fwd_ms", 1, "gflops_fwd"), ("fwdbwd_ms", 3, "gflops_fwdbwd")):
        ms = row.get(key, {}).get("median") if row.get(key) else None
        row[out] = mult * flops / (ms / 1e3) / 1e9 if flops and ms else None
    row["pct_of_matmul_peak"] = 100 * row["gflops_fwd"] / peak if row["gflops_fwd"] and peak else None


def _add_ratios(res: dict, backward: bool) -> None:
    """``ratio_vs_softmax`` (and ``ratio_vs_twin`` for peers): time / reference time at the same L."""
    ok = {(r["source"], r["name"], r["L"]): _primary(r, backward)[0] for r in res["rows"] if r["status"] == "ok"}
    for r in res["rows"]:
        ms = ok.get((r["source"], r["name"], r["L"]))
        base = ok.get(("mixer", "softmax", r["L"]))
        r["ratio_vs_softmax"] = ms / base if ms and base else None
        if r["source"] == "peer":
            twin = ok.get(("mixer", r["twin"], r["L"])) if r["twin"] else None
            r["ratio_vs_twin"] = ms / twin if ms and twin else None


def _progress_line(row: dict, backward: bool) -> str:
    if row["status"] != "ok":
        return f"  {label(row):<30} L={row['L']:<6} {row['status']}: {row.get('error', '')}"
    ms, mb = _primary(row, backward)
    what = "fwd+bwd" if backward and row.get("fwdbwd_ms") else "fwd"
    extra = f"  [{row['reason']}]" if row.get("reason") else ""
    return f"  {label(row):<30} L={row['L']:<6} {what} {ms:9.2f} ms  peak {mb:8.1f} MB{extra}"


def run_speed(
    mixer_names: list[str] | None = None,
    config: SpeedConfig | None = None,
    *,
    options: dict | None = None,
    baseline: str | None = "softmax",
    log: Callable[[str], None] | None = None,
    on_update: Callable[[dict], None] | None = None,
) -> dict:
    """Benchmark longseq mixers (``None`` = all registered); ``baseline`` is added when missing so
    that every row gets its ratio to exact attention at the same length."""
    cfg = config or SpeedConfig()
    names = None if mixer_names is None else list(dict.fromkeys(mixer_names))
    if names is not None and baseline and baseline not in names:
        names.insert(0, baseline)
    return run_targets(mixer_targets(names, cfg.causal, options), cfg, kind="speed", log=log, on_update=on_update)
