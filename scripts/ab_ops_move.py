"""Same-run A/B timing of mixers between two source trees (the ops-layout move: benchmarks/OPS_MOVE.md).

Each measurement is a fresh process with ``PYTHONPATH=<tree>`` and one torch thread: the mixer is
built with a fixed seed (d_model 256, 4 heads, batch 1, float32), one warm-up forward+backward
(gradients of the input and all parameters), then ``--repeats`` timed ones; the process reports
the median CPU time of a call (``time.process_time``: with one thread it is the wall time of an idle
machine, and it does not count the time other processes hold the cores, which on the shared
8-engineer machine made wall times of the same call vary 2x), the median wall time, and its peak RSS. Rounds alternate the trees (A, B, A, B, ... per mixer and round) so
that the machine's drift hits both alike; the report gives, per mixer, the median over rounds of
each tree's time and the median of the per-round ratios B / A with their range.

    OMP_NUM_THREADS=1 python scripts/ab_ops_move.py --tree base=/tmp/ops_base/src --tree new=src \\
        --mixers s4d,s4,s5,dss,gss,linear,performer,h3:causal --length 16384 --rounds 3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, resource, statistics, sys, time
import torch
torch.set_num_threads(1)
import longseq
name, causal, L, repeats = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
m = longseq.mixers.build(name, 256, num_heads=4, causal=causal)
x = torch.randn(1, L, 256, requires_grad=True)
def step():
    y = m(x)
    y.backward(torch.ones_like(y))
step()
times, cpu = [], []
for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)
print(json.dumps({"median": statistics.median(cpu), "wall": statistics.median(times), "cpu": cpu, "times": times,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(tree: str, name: str, causal: bool, L: int, repeats: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", WORKER, name, "1" if causal else "0", str(L), str(repeats)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(tree: str, name: str, causal: bool, L: int) -> dict:
    """Peak extra memory (MB) of a forward and of a forward+backward call, by the tree's own bench
    worker in its exact-heap mode (glibc mmap threshold 64 KB: the peak of the live tensors)."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_=str(64 * 1024))
    job = {"kind": "module", "source": "mixer", "name": name, "d_model": 256, "heads": 4, "causal": causal, "L": L,
           "batch": 1, "measure": "memory", "threads": 1, "dtype": "float32"}
    out = subprocess.run([sys.executable, "-m", "longseq.bench._worker", json.dumps(job)], env=env,
                         capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("@@LONGSEQ_BENCH@@")][-1]
    res = json.loads(line[len("@@LONGSEQ_BENCH@@"):])
    return {"fwd_mb": res.get("peak_fwd_mb"), "fwdbwd_mb": res.get("peak_fwdbwd_mb"), "status": res["status"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, help="label=path of a src/ directory (two of them)")
    p.add_argument("--mixers", required=True, help="comma-separated names; name:causal for the causal form")
    p.add_argument("--length", type=int, default=16384)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="write the raw results as JSON here")
    p.add_argument("--memory-only", action="store_true", help="only the exact-heap peak memory, once per tree")
    a = p.parse_args()
    trees = [t.split("=", 1) for t in a.tree]
    if len(trees) != 2:
        raise SystemExit("give exactly two --tree label=path")
    (la, ta), (lb, tb) = trees
    raw = {}
    for spec in a.mixers.split(","):
        name, _, form = spec.partition(":")
        causal = form == "causal"
        if a.memory_only:
            raw[spec] = {label: memory(tree, name, causal, a.length) for label, tree in trees}
            ma, mb = raw[spec][la], raw[spec][lb]
            print(f"| {spec} | {ma['fwd_mb']:.1f} / {mb['fwd_mb']:.1f} | {ma['fwdbwd_mb']:.1f} / {mb['fwdbwd_mb']:.1f} |",
                  flush=True)
            continue
        rows = []
        for r in range(a.rounds):
            order = [(la, ta), (lb, tb)] if r % 2 == 0 else [(lb, tb), (la, ta)]
            res = {label: measure(tree, name, causal, a.length, a.repeats) for label, tree in order}
            rows.append(res)
            print(f"{spec} round {r + 1}: {la} {res[la]['median']:.3f} s cpu ({res[la]['wall']:.3f} wall), "
                  f"{lb} {res[lb]['median']:.3f} s cpu ({res[lb]['wall']:.3f} wall)", flush=True)
        raw[spec] = rows
        ta_med = statistics.median(x[la]["median"] for x in rows)
        tb_med = statistics.median(x[lb]["median"] for x in rows)
        ratios = [x[lb]["median"] / x[la]["median"] for x in rows]
        rss = (statistics.median(x[la]["maxrss_mb"] for x in rows), statistics.median(x[lb]["maxrss_mb"] for x in rows))
        print(f"| {spec} | {ta_med:.3f} | {tb_med:.3f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) | {rss[0]:.0f} / {rss[1]:.0f} |", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
