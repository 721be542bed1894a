"""Write benchmarks/RESULTS.md from the ``results.json`` files of ``longseq bench`` runs.

    python benchmarks/summarize.py SPEED_DIR CAUSAL_DIR PEERS_DIR GENERATE_DIR [RATIOS_DIR ...] > benchmarks/RESULTS.md

The headline table is at the longest length every run reached (16K): each mixer's fwd+bwd time
and peak memory as ratios to ``softmax`` (SDPA) measured in the same run, and how its memory
grows per doubling of L (from 4K to 16K: sqrt of the 4x ratio). The full per-length tables of
each run follow unchanged (``results.md``), then the ``longseq bench ratios`` runs (speed-ups at
16K with the baseline and each mixer timed in alternation over several rounds).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def ratio_command(d: str) -> str:
    """The ``longseq bench ratios`` command line of a ratios run, read from its ``results.json``
    (so the listed command is the one that made the numbers, rounds included)."""
    res = _load(d)
    c = res["config"]
    mixers = ",".join(r["name"] for r in res["rows"] if r["name"] != res["baseline"])
    return ("longseq bench ratios " + ("--causal " if res["causal"] else "") + f"--mixers {mixers} "
            + ("" if res["baseline"] == "softmax" else f"--baseline {res['baseline']} ")
            + f"--lengths {res['L']} --rounds {res['rounds']} --repeats {c['repeats']} --threads {c['threads']} "
            f"--out {d}\n")


def _load(d: str) -> dict:
    return json.loads((Path(d) / "results.json").read_text())


def _rows(res: dict) -> dict[tuple[str, int], dict]:
    """Rows with a fwd+bwd measurement (a row over the time budget in forward has none)."""
    return {(r["name"], r["L"]): r for r in res["rows"] if r.get("status") == "ok" and "fwdbwd_ms" in r}


def headline(res: dict, L: int = 16384, L0: int = 4096) -> list[str]:
    rows = _rows(res)
    ref = rows.get(("softmax", L))
    out = [f"| mixer | fwd+bwd s at {L // 1024}K | speed-up vs softmax | peak MB | memory vs softmax | "
           f"memory growth per doubling ({L0 // 1024}K→{L // 1024}K) | note |", "|---|---|---|---|---|---|---|"]
    for t in res["targets"]:
        name = t["name"]
        r, r0 = rows.get((name, L)), rows.get((name, L0))
        if r is None:
            why = t.get("stopped") or t.get("skip_reason") or "not reached"
            if isinstance(why, dict):
                why = why.get("reason", why)
            out.append(f"| `{name}` | – | – | – | – | – | {str(why)[:90]} |")
            continue
        ms, mb = r["fwdbwd_ms"]["median"], r["peak_fwdbwd_mb"]
        speed = ref["fwdbwd_ms"]["median"] / ms if ref else float("nan")
        mem = mb / ref["peak_fwdbwd_mb"] if ref and ref["peak_fwdbwd_mb"] else float("nan")
        growth = math.sqrt(mb / r0["peak_fwdbwd_mb"]) if r0 and r0["peak_fwdbwd_mb"] > 0 else float("nan")
        out.append(f"| `{name}` | {ms / 1000:.2f} | {speed:.2f}x | {mb:.0f} | {mem:.2f}x | {growth:.2f}x | |")
    return out


def main(speed_dir: str, causal_dir: str, peers_dir: str, gen_dir: str, *ratio_dirs: str) -> None:
    speed = _load(speed_dir)
    m, c = speed["machine"], speed["config"]
    print("# Benchmark results\n")
    print(f"Produced {speed['created']} on the project's CI-class machine: {m['cpu_count']} CPU cores "
          f"({m['processor']}, {m['platform']}), Python {m['python']}, torch {m['torch']}, "
          f"{m['torch_threads']} torch threads, fp32 matmul peak {m['matmul_fp32_gflops']:.0f} GFLOP/s "
          "measured in the same run. Nothing else ran during these runs. Batch "
          f"{c['batch']}, d_model {c['d_model']}, {c['heads']} heads, {c['dtype']}, "
          f"{'causal' if c['causal'] else 'bidirectional'} (causal-only mixers: see the causal run), median of "
          f"{c['repeats']} timed runs after {c['warmup']} warm-up; every configuration in a fresh process; "
          "peak memory = the resident-set high-water mark during one call minus the RSS before it, measured "
          "after a warm-up call in a second fresh process whose glibc mmap threshold is fixed at 64 KB (every "
          "tensor its own mapping, freed at once: the peak of the live tensors; see longseq/bench/_worker.py). "
          f"A mixer stops at the first length over {c['time_budget']:.0f} s per call. Ratios are within this "
          "run; absolute times on shared machines vary.\n")
    print("Commands (from the repository root, `make install` first; see benchmarks/README.md):\n")
    print("```bash\nexport OMP_NUM_THREADS=2\n"
          "longseq bench speed --mixers all --lengths 1024,4096,16384 --repeats 3 --warmup 1 --time-budget 30 "
          "--threads 2 --out benchmarks/out/speed-bidir\n"
          "longseq bench speed --causal --mixers softmax,h3,s4d,s5,gss,linear,local,performer,transformer_ls,flash "
          "--lengths 1024,4096,16384 --repeats 3 --warmup 1 --time-budget 30 --threads 2 --out benchmarks/out/speed-causal\n"
          "longseq bench peers --lengths 1024,4096,16384 --repeats 3 --warmup 1 --time-budget 30 --threads 2 "
          "--out benchmarks/out/peers\n"
          "longseq bench generate --mixers softmax,local,linear,performer,s4d,s5,h3,transformer_ls --prompt 1024 "
          "--new 256 --threads 2 --out benchmarks/out/generate\n"
          + "".join(ratio_command(d) for d in ratio_dirs)
          + "python benchmarks/summarize.py benchmarks/out/speed-bidir benchmarks/out/speed-causal benchmarks/out/peers "
          "benchmarks/out/generate " + " ".join(ratio_dirs) + " > benchmarks/RESULTS.md\n```\n")
    print("## At L = 16K: every mixer vs softmax (fwd+bwd)\n")
    print("\n".join(headline(speed)) + "\n")
    print("## At L = 16K, causal mode (vs causal SDPA, which skips masked blocks: ~2x faster than bidirectional; `h3` is causal only)\n")
    print("\n".join(headline(_load(causal_dir))) + "\n")
    for d in ratio_dirs:
        print("## " + (Path(d) / "results.md").read_text().strip().removeprefix("# ") + "\n")
    print("## Speed and memory, 1K-16K, bidirectional\n")
    print((Path(speed_dir) / "results.md").read_text().strip() + "\n")
    print("## Speed and memory, 1K-16K, causal\n")
    print((Path(causal_dir) / "results.md").read_text().strip() + "\n")
    print("## Peer packages next to their longseq twins\n")
    print((Path(peers_dir) / "results.md").read_text().strip() + "\n")
    print("## Generation (prefill + token-by-token decoding with `step`)\n")
    print((Path(gen_dir) / "results.md").read_text().strip() + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
