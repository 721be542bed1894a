"""One benchmark measurement in a fresh process: ``python -m longseq.bench._worker '<json>'``.

Every configuration runs in its own interpreter so that allocator caches, thread pools and the
peak-memory high-water mark of one measurement never leak into the next. The parent
(:mod:`longseq.bench.speed`) passes a JSON job as the only argument; the worker prints one line
``RESULT_PREFIX + json`` on stdout (anything else a library prints is ignored by the parent).

Jobs (``job["kind"]``):

* ``"module"``: build a longseq mixer (``source="mixer"``) or a peer adapter (``source="peer"``),
  then measure forward (under ``no_grad``) and forward+backward (grads of the input and all
  parameters) time and peak memory.
* ``"matmul"``: fp32 square-matmul throughput, the machine's practical GFLOP/s peak.
* ``"generate"``: prefill time and decoding tokens/s of a ``longseq.models.CausalLM``
  (see :mod:`longseq.bench.generate`).
* ``"structured"``: one training step of a structured model (HMM, ...; see
  :mod:`longseq.bench.structured`).

Peak memory
-----------
Measured after a warm-up call (so one-time allocations of a first call, such as thread pools and
kernel caches, are not counted), as the peak during a call minus the memory just before it; the
median of ``memory_repeats`` calls (default 1) is reported as ``peak_*_mb`` (all values in
``peak_*_mb_all``). CUDA: ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()``.
CPU: peak resident set size minus the RSS before; freed heap memory is first returned to the OS
(``malloc_trim``) and the process high-water mark is reset through ``/proc/self/clear_refs``
where Linux allows it (``"rss_hwm_reset"``); elsewhere the lifetime ``ru_maxrss`` is used
(``"ru_maxrss"``), which includes earlier peaks of the process and so can only over-estimate.

The parent (:func:`longseq.bench.speed.run_module_job`) times a configuration in one worker
(``job["measure"] = "time"``) and measures its memory in a second one (``"memory"``) started with
glibc's ``mmap`` threshold fixed at 64 KB (``MALLOC_MMAP_THRESHOLD_``; method suffix
``"+mmap64k"``): every tensor of 64 KB or more is then its own mapping, returned to the OS when
freed, so the RSS peak is the peak of the live tensors. With glibc's adaptive threshold,
multi-MB tensors come from the heap and whether freed heap blocks are reused or fresh pages are
touched varies from call to call, so repeated calls of one process read different peaks; with the
fixed threshold every call reads the same (the readings: benchmarks/notes/2026-12-08-docstring-timings.md).
The fixed threshold makes allocation slower, hence the separate process.
``"both"`` (the default; in-process runs) times and then measures in the same process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback

from longseq import mixers
from longseq.bench import peer_modules
from longseq.models import CausalLM

from ._measure import (  # noqa: F401  (re-exported: the worker's measuring tools)
    _DTYPES,
    EXACT_HEAP_ENV,
    RESULT_PREFIX,
    PeakMemory,
    _maxrss_bytes,
    _release_free_memory,
    _reset_hwm,
    _rss_bytes,
    _timed,
    summarize,
)


def _setup(job):
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    torch.manual_seed(int(job.get("seed", 0)))
    device = torch.device(job.get("device") or "cpu")
    dtype = getattr(torch, _DTYPES[job.get("dtype", "float32")])
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    return torch, device, dtype, sync


# ---------------------------------------------------------------------------- jobs
def build_module(job):
    """The module a ``"module"`` job measures: ``[B, L, d_model] -> [B, L, d_model]``."""
    if job["source"] == "mixer":
        return mixers.build(
            job["name"],
            job["d_model"],
            num_heads=mixers.heads_for(job["name"], job["heads"]),
            causal=job["causal"],
            **job.get("options", {}),
        )
    return peer_modules.build(
        job["name"],
        job["d_model"],
        heads=job["heads"],
        causal=job["causal"],
        seq_len=job["L"],
        **job.get("options", {}),
    )


def run_module(job) -> dict:
    torch, device, dtype, sync = _setup(job)
    B, L, d = job["batch"], job["L"], job["d_model"]
    warmup, repeats = int(job.get("warmup", 1)), int(job.get("repeats", 5))
    with contextlib.redirect_stdout(sys.stderr):  # packages that print while building (performer)
        model = build_module(job).to(device=device, dtype=dtype)
    model.eval()  # no dropout; the benchmark measures the computation, not the regulariser
    x = torch.randn(B, L, d, device=device, dtype=dtype)
    grad_out = torch.randn(B, L, d, device=device, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    out = {"status": "ok", "n_params": sum(p.numel() for p in model.parameters())}

    def fwd():
        with torch.no_grad():
            return model(x)

    def fwd_bwd():
        for p in params:
            p.grad = None
        xg = x.detach().requires_grad_(True)
        model(xg).backward(grad_out)

    budget = job.get("time_budget")
    mode = job.get("measure", "both")
    mem_repeats = max(1, int(job.get("memory_repeats", 1)))
    heap = "+mmap64k" if all(os.environ.get(k) == v for k, v in EXACT_HEAP_ENV.items()) else ""

    def timed(fn, name):
        """Time ``fn`` (median of repeats after warm-up). Returns the first call's result and
        whether it stayed within the time budget; a first call over budget is reported alone, with
        its memory (which includes the one-time allocations of a first call), and ends the measurement."""
        with PeakMemory(device) as m:
            sync()
            t0 = time.perf_counter()
            result = fn()
            sync()
            first = time.perf_counter() - t0
        if budget and first > budget:
            out[f"{name}_ms"], out[f"peak_{name}_mb"], out["over_time_budget"] = summarize([first]), m.mb, True
            out["memory_method"] = m.method + heap
            return result, False
        out[f"{name}_ms"] = summarize(_timed(fn, sync, warmup, repeats))
        return result, True

    def peak(fn, name):
        """The median peak memory of ``mem_repeats`` calls (after at least one earlier call)."""
        mbs = []
        for _ in range(mem_repeats):
            _release_free_memory()
            with PeakMemory(device) as m:
                fn()
            mbs.append(m.mb)
        out[f"peak_{name}_mb"], out[f"peak_{name}_mb_all"] = sorted(mbs)[len(mbs) // 2], [round(v, 2) for v in mbs]
        out["memory_method"] = m.method + heap

    calls = {"fwd": fwd} | ({"fwdbwd": fwd_bwd} if job.get("backward", True) else {})
    if mode == "memory":  # a worker of its own: warm up, measure
        for name, fn in calls.items():
            y = fn()
            if name == "fwd":
                out["finite"] = bool(torch.isfinite(y).all())
                del y
            peak(fn, name)
        out.setdefault("over_time_budget", False)
        return out
    y, ok = timed(fwd, "fwd")
    if tuple(y.shape) != (B, L, d):
        raise RuntimeError(f"module returned shape {tuple(y.shape)}, expected {(B, L, d)}")
    out["finite"] = bool(torch.isfinite(y).all())
    del y
    measured = {"fwd": fwd} if ok else {}
    if ok and "fwdbwd" in calls and timed(fwd_bwd, "fwdbwd")[1]:
        measured["fwdbwd"] = fwd_bwd
    if mode == "both":
        for name, fn in measured.items():
            peak(fn, name)
    out.setdefault("over_time_budget", False)
    return out


def run_matmul(job) -> dict:
    """Best-of-repeats fp32 GFLOP/s of an ``n x n`` matmul (2 n^3 FLOPs each)."""
    torch, device, _, sync = _setup(job)
    n = int(job.get("n", 1024))
    a = torch.randn(n, n, device=device, dtype=torch.float32)
    b = torch.randn(n, n, device=device, dtype=torch.float32)
    times = _timed(lambda: torch.mm(a, b), sync, int(job.get("warmup", 2)), int(job.get("repeats", 10)))
    return {
        "status": "ok",
        "n": n,
        "gflops": 2 * n**3 / min(times) / 1e9,
        "gflops_median": 2 * n**3 / summarize(times)["median"] * 1e3 / 1e9,
    }


def run_generate(job) -> dict:
    torch, device, dtype, sync = _setup(job)
    return measure_generation(job, torch, device, dtype, sync)


def measure_generation(job: dict, torch, device, dtype, sync) -> dict:
    """Worker side of one :mod:`longseq.bench.generate` mixer (torch set up by :func:`_setup`)."""

    B, P, N, V = job["batch"], job["prompt"], job["new"], job["vocab_size"]
    model = CausalLM(
        V,
        job["d_model"],
        job["n_layers"],
        mixer=job["name"],
        num_heads=job["heads"],
        mixer_options=job.get("options") or None,
    )
    model = model.to(device=device, dtype=dtype).eval()
    prompt = torch.randint(V, (B, P), device=device)
    has_step = mixers.spec(job["name"]).step
    out = {"status": "ok", "n_params": sum(p.numel() for p in model.parameters()), "has_step": has_step}

    @torch.no_grad()
    def generate(ids, n_new, step_times=None):
        sync()
        t0 = time.perf_counter()
        if not has_step:
            model(ids)
            sync()
            return time.perf_counter() - t0, 0.0
        logits, state = model(ids, state=model.init_state(B), return_state=True)
        tok = logits[:, -1].argmax(-1)  # [B]
        sync()
        t1 = time.perf_counter()
        for _ in range(n_new):
            ts = time.perf_counter()
            logits_t, state = model.step(tok, state)
            tok = logits_t.argmax(-1)
            if step_times is not None:
                sync()
                step_times.append(time.perf_counter() - ts)
        sync()
        return t1 - t0, time.perf_counter() - t1

    generate(prompt[:, : min(P, 16)], min(N, 4))  # warm-up
    steps: list[float] = []
    with PeakMemory(device) as m:
        prefill_s, decode_s = generate(prompt, N, steps)
    out |= {"prefill_ms": prefill_s * 1e3, "peak_mb": m.mb, "memory_method": m.method}
    if not has_step:
        out["reason"] = "mixer has no recurrent step: prefill (one forward) only"
    elif N > 0:
        tenth = max(1, N // 10)
        out |= {
            "decode_s": decode_s,
            "tokens_per_s": B * N / decode_s,
            "step_ms": summarize(steps),
            "step_ms_first_tenth": 1e3 * sum(steps[:tenth]) / tenth,
            "step_ms_last_tenth": 1e3 * sum(steps[-tenth:]) / tenth,
        }
    return out


def run_structured(job) -> dict:
    from longseq.bench.structured_worker import measure_structured

    torch, device, dtype, sync = _setup(job)
    return measure_structured(job, torch, device, dtype, sync)


def run(job: dict) -> dict:
    import torch

    kind = job["kind"]
    fn = {"module": run_module, "matmul": run_matmul, "generate": run_generate, "structured": run_structured}[kind]
    try:
        return fn(job)
    except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        oom = isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or any(
            s in msg for s in ("can't allocate memory", "out of memory", "Cannot allocate memory")
        )
        return {"status": "oom" if oom else "error", "error": f"{type(e).__name__}: {msg}"}
    except Exception as e:  # reported, never raised: one failing configuration must not stop the run
        msg = str(e).splitlines()[0] if str(e) else ""
        return {"status": "error", "error": f"{type(e).__name__}: {msg}", "traceback": traceback.format_exc(limit=4)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(sys.stdin.read() if not argv or argv[0] == "-" else argv[0])
    result = run(job)
    sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
