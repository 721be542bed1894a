"""CFL table (issue 21): cross-entropy gap to the exact lower bound, per task and model.

    PYTHONPATH=src python benchmarks/stack/cfl_table.py --out benchmarks/stack/cfl.jsonl \
        --seeds 0 --steps 300 --train-lengths 10 20 --test-lengths 10 30

One JSON line per (task, model, seed) is appended to --out (runs already there are skipped), so
the script can be stopped and resumed. Models are CausalLM(n_layers=1, ffn=none, untied head) around one
mixer, except the transformer and SSM baselines (2 layers with their FFN)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longseq import tasks
from longseq.train import TrainConfig, build_model, train

MODELS = {
    "lstm": dict(mixer="lstm", n_layers=1, ffn="none", mixer_options={"hidden_size": 20}),
    "superposition": dict(mixer="superposition_stack", n_layers=1, ffn="none",
                          mixer_options={"hidden_size": 20, "stack_size": 10}),
    "ns_rnn": dict(mixer="ns_rnn", n_layers=1, ffn="none",
                   mixer_options={"hidden_size": 20, "num_states": 2, "stack_symbols": 3}),
    "rns_rnn": dict(mixer="rns_rnn", n_layers=1, ffn="none",
                    mixer_options={"hidden_size": 20, "num_states": 2, "stack_symbols": 3}),
    "softmax": dict(mixer="softmax", n_layers=2, ffn="mlp", num_heads=2, position="learned", max_len=128),
    "s4d": dict(mixer="s4d", n_layers=2, ffn="mlp"),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", default="marked_reversal,unmarked_reversal,padded_reversal,dyck,hardest_cfl")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--train-lengths", type=int, nargs=2, default=[40, 80])
    p.add_argument("--test-lengths", type=int, nargs=2, default=[40, 100])
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--n-test-per-length", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["model"], r["seed"]))
    for seed in a.seeds:
        for task_name in a.tasks.split(","):
            task = tasks.build(task_name, seed=seed, train_lengths=a.train_lengths, val_lengths=a.train_lengths,
                               test_lengths=a.test_lengths, n_train=a.n_train, n_val=a.n_val,
                               n_test_per_length=a.n_test_per_length)
            for model_name in a.models.split(","):
                if (task_name, model_name, seed) in done:
                    continue
                spec = dict(MODELS[model_name])
                mixer = spec.pop("mixer")
                torch.manual_seed(seed)
                model = build_model(task, mixer, d_model=a.d_model, tie_embeddings=False, **spec)
                cfg = TrainConfig(steps=a.steps, batch_size=10, lr=a.lr, warmup=0, weight_decay=0.0, grad_clip=5.0,
                                  eval_every=a.steps, eval_batch_size=64, seed=seed, progress=False, threads=1)
                t0 = time.perf_counter()
                final = train(model, task, cfg)
                rec = {"task": task_name, "model": model_name, "seed": seed, "steps": a.steps,
                       "params": final["num_parameters"], "seconds": round(time.perf_counter() - t0, 1),
                       "test_loss": final["test"]["loss"], "test_lower_bound": final["test"]["lower_bound"],
                       "test_gap": final["test"]["ce_gap"], "val_gap": final["validation"]["ce_gap"],
                       "train_lengths": a.train_lengths, "test_lengths": a.test_lengths}
                with open(out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
