"""Time per training step (inside + backward) of the neural PCFG, full rank vs rank space, vs the
number of nonterminals; one fresh process per configuration (``longseq.structured.bench_pcfg``).

    PYTHONPATH=src python scripts/bench_pcfg.py --nt 30,60,125,250 --rank 64 \
        --out benchmarks/structured_runs/bench_pcfg.json

Each row: seconds per batch (median over ``--repeats`` after one warm-up step) and the process's
peak resident memory (``ru_maxrss``, includes the Python + torch baseline of ~0.3 GB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys, torch
torch.set_num_threads(1)
from longseq.structured import bench_pcfg
cfg = json.loads(sys.argv[1])
out = bench_pcfg(cfg.pop("nt"), cfg.pop("rank"), **cfg)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nt", default="30,60,125,250")
    ap.add_argument("--full-nt", default=None, help="nonterminal counts for full rank (default: --nt)")
    ap.add_argument("--rank", default="64", help="comma-separated ranks for the rank-space runs")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="PNG of seconds per batch vs nonterminals")
    ap.add_argument("--from-json", type=Path, default=None, help="only plot rows saved by an earlier --out")
    args = ap.parse_args(argv)
    if args.from_json:
        plot(json.loads(args.from_json.read_text()), args.plot)
        return
    nts = [int(x) for x in args.nt.split(",")]
    full = [int(x) for x in (args.full_nt or args.nt).split(",")]
    configs = [(n, None) for n in full] + [(n, int(r)) for r in args.rank.split(",") for n in nts]
    rows = []
    for nt, rank in configs:
        cfg = {"nt": nt, "rank": rank, "batch_size": args.batch, "length": args.length, "repeats": args.repeats}
        try:
            p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                               timeout=args.timeout)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            row = json.loads(line[-1][7:]) if line else {"num_nonterminals": nt, "rank": rank,
                                                         "error": p.stderr.strip()[-300:]}
        except subprocess.TimeoutExpired:
            row = {"num_nonterminals": nt, "rank": rank, "error": f"timeout {args.timeout}s"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        from longseq.utils.io import atomic_write

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, lambda p: Path(p).write_text(json.dumps(rows, indent=1) + "\n"))
    if args.plot:
        plot(rows, args.plot)


def plot(rows, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from longseq.utils.io import atomic_write

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for rank in dict.fromkeys(r.get("rank") for r in rows):
        pts = sorted((r["num_nonterminals"], r["seconds_per_batch"]) for r in rows
                     if r.get("rank") == rank and "seconds_per_batch" in r)
        if pts:
            ax.plot(*zip(*pts), marker="o", label="full rank" if rank is None else f"rank space r={rank}")
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("nonterminals (preterminals = 2x)"), ax.set_ylabel("seconds per training step")
    ax.legend(), fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))


if __name__ == "__main__":
    main()
