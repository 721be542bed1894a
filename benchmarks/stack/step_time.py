"""Time per training step (forward + backward + Adam) of the RNS-RNN with the full stack vs the
limited (incremental) stack, over sequence lengths (issue 21).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/stack/step_time.py --out benchmarks/stack/step_time.jsonl

Model: CausalLM(vocab 6, d_model 32, 1 layer, no FFN) around ``rns_rnn`` (hidden 20, |Q| = 2,
|Γ| = 3), batch 10, one thread. The full stack is skipped at lengths whose previous length took
longer than --full-budget seconds per step (its cost grows as n^2 Python-level products)."""

from __future__ import annotations

import argparse
import json
import time

import torch

from longseq.models import CausalLM


def step_time(n: int, window, batch: int, reps: int) -> float:
    torch.manual_seed(0)
    m = CausalLM(6, d_model=32, n_layers=1, mixer="rns_rnn", ffn="none", tie_embeddings=False,
                 mixer_options={"hidden_size": 20, "num_states": 2, "stack_symbols": 3, "window": window})
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    ids = torch.randint(0, 6, (batch, n + 1))
    times = []
    for _ in range(reps + 1):                      # the first step is a warm-up
        t0 = time.perf_counter()
        logits = m(ids[:, :-1])
        loss = m.loss(logits, ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--full-budget", type=float, default=60.0)
    p.add_argument("--stacks", default="incremental,full", help="which stacks to time")
    a = p.parse_args()
    torch.set_num_threads(1)
    full_ok = True
    for n in a.lengths:
        for label, window in (("incremental", a.window), ("full", None)):
            if (window is None and not full_ok) or label not in a.stacks.split(","):
                continue
            reps = a.reps if n <= 256 else 1
            s = step_time(n, window, a.batch, reps)
            rec = {"model": "rns_rnn", "stack": label, "window": window, "n": n, "batch": a.batch,
                   "seconds_per_step": round(s, 4), "reps": reps}
            if window is None and s > a.full_budget:
                full_ok = False
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
