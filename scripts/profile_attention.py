"""Profile fwd and fwd+bwd of mixers at one length, in one process, next to ``softmax``.

    python scripts/profile_attention.py --mixers softmax,performer --length 16384 [--causal] \
        [--threads 1] [--repeats 3] [--profile performer]

Prints, per mixer, the median forward and forward+backward seconds, the peak extra resident
memory of one forward+backward (VmHWM reset through /proc/self/clear_refs), and the ratios to
the first mixer; ``--profile NAME`` adds torch.profiler's table of the ops that take the time.
Ratios only: the absolute numbers depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from longseq.mixers import build, heads_for


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def run_once(mixer, x, backward: bool) -> float:
    t0 = time.perf_counter()
    if backward:
        y = mixer(x)
        y.square().mean().backward()
    else:
        with torch.no_grad():
            mixer(x)
    return time.perf_counter() - t0


def measure(name: str, args) -> dict:
    torch.manual_seed(0)
    mixer = build(name, d_model=args.d_model, num_heads=heads_for(name, args.heads), causal=args.causal)
    x = torch.randn(1, args.length, args.d_model, requires_grad=True)
    for _ in range(args.warmup):
        run_once(mixer, x, True)
    fwd = statistics.median(run_once(mixer, x, False) for _ in range(args.repeats))
    fb = statistics.median(run_once(mixer, x, True) for _ in range(args.repeats))
    mixer.zero_grad(set_to_none=True)
    x.grad = None
    base = _rss_kb("VmRSS")
    _reset_peak()
    run_once(mixer, x, True)
    peak_mb = (_rss_kb("VmHWM") - base) / 1024
    if name in args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run_once(mixer, x, True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return {"fwd": fwd, "fwdbwd": fb, "peak_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixers", default="softmax,performer")
    p.add_argument("--length", type=int, default=16384)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--profile", default="", help="comma-separated mixers to profile")
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    args.profile = [n for n in args.profile.split(",") if n]
    torch.set_num_threads(args.threads)
    names = args.mixers.split(",")
    res = {n: measure(n, args) for n in names}
    ref = res[names[0]]
    mode = "causal" if args.causal else "bidirectional"
    print(f"L={args.length} {mode} d_model={args.d_model} heads={args.heads} threads={args.threads}")
    print(f"{'mixer':<16} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>8} {'speed-up':>9} {'mem ratio':>9}")
    for n, r in res.items():
        print(f"{n:<16} {r['fwd']:8.3f} {r['fwdbwd']:10.3f} {r['peak_mb']:8.0f} "
              f"{ref['fwdbwd'] / r['fwdbwd']:8.2f}x {r['peak_mb'] / max(ref['peak_mb'], 1):8.2f}x")


if __name__ == "__main__":
    main()
