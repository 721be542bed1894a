"""Markdown tables from benchmarks/stack/*.jsonl (cfl.jsonl, step_time.jsonl, logic.jsonl).

    python benchmarks/stack/summarize.py
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent


def _load(name):
    p = HERE / name
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def cfl_table() -> str:
    rows = _load("cfl.jsonl")
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    gaps = defaultdict(list)
    for r in rows:
        gaps[r["task"], r["model"]].append(r["test_gap"])
    out = ["| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in models:
        cells = []
        for t in tasks:
            g = gaps.get((t, m), [])
            cells.append(f"{statistics.mean(g):.3f} (n={len(g)})" if g else "–")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    bounds = {r["task"]: r["test_lower_bound"] for r in rows if r["seed"] == 0}
    out.append("| *lower bound (seed 0 test set)* | " + " | ".join(f"{bounds.get(t, float('nan')):.3f}" for t in tasks) + " |")
    return "\n".join(out)


def step_table() -> str:
    rows = _load("step_time.jsonl")
    ns = sorted({r["n"] for r in rows})
    by = {(r["stack"], r["n"]): r["seconds_per_step"] for r in rows}
    out = ["| n | " + " | ".join(str(n) for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for s in ("full", "incremental"):
        out.append(f"| {s} | " + " | ".join(f"{by[s, n]:.2f}" if (s, n) in by else "–" for n in ns) + " |")
    return "\n".join(out)


def logic_table() -> str:
    rows = _load("logic.jsonl")
    if not rows:
        return ""
    ks = sorted({int(k) for r in rows for k in r["test_acc_by_ops"]})
    acc = defaultdict(list)
    for r in rows:
        for k, v in r["test_acc_by_ops"].items():
            acc[r["model"], int(k)].append(v)
    out = ["| model | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in dict.fromkeys(r["model"] for r in rows):
        out.append(f"| {m} | " + " | ".join(f"{100 * statistics.mean(acc[m, k]):.0f}" for k in ks) + " |")
    parse = [f"| {r['model']} (seed {r['seed']}) | {r['parse']['model_f1']:.3f} | {r['parse']['right_branching_f1']:.3f} |"
             for r in rows if "parse" in r]
    if parse:
        out += ["", "| model | parse F1 | right-branching F1 |", "|---|---|---|"] + parse
    return "\n".join(out)


if __name__ == "__main__":
    print(cfl_table(), "\n")
    print(step_table(), "\n")
    print(logic_table())
