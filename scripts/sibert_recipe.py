"""SIBERT recipe on quick MQAR (closing-note measurement for issue 8).

Trains, single-threaded, a 2-layer d_model-64 LM (the quick preset's model) in three set-ups:
the scale-invariant model with ``sgd_si``, the standard model with AdamW, and the standard model
with plain SGD, over a few learning rates each, and prints validation query accuracy.

    python scripts/sibert_recipe.py --steps 600 --runs si:sgd_si:0.3 std:adamw:3e-3 std:sgd:0.3

Measured (validation query accuracy, batch 32, warmup 100 + cosine, 1 thread; sgd_si with wd 1e-3,
C = 2; AdamW / SGD with the preset's wd 0.1 and grad_clip 1):

    1200 steps, seed 0 / seed 1:  SI + sgd_si lr 0.3   0.636 / 0.950
                                  std + AdamW lr 3e-3   0.339 / 0.999
    600 steps, seed 0:            SI + sgd_si  lr 0.1 / 0.3 / 1 / 3        0.289 / 0.470 / 0.363 / 0.291
                                  std + AdamW  lr 1e-3 / 3e-3 / 1e-2       0.258 / 0.278 / 0.257
                                  std + SGD    lr 0.3 / 1 / 3              0.026 / 0.027 / 0.028
                                  std + sgd_si lr 0.3: 0.028; SI + AdamW lr 3e-3: 0.575
                                  SI + sgd_si lr 0.3 without clipping: 0.470 (the clip never fired)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from longseq import tasks
from longseq.train import TrainConfig, build_model, train


def run(spec: str, steps: int, wd_si: float, seed: int, init_scale: float = 1.0) -> dict:
    model_kind, optimizer, lr, *clip = spec.split(":")
    lr = float(lr)
    si_clip = (None if clip[0] == "none" else float(clip[0])) if clip else 2.0
    task = tasks.build("mqar", preset="quick", seed=seed)
    torch.manual_seed(seed)
    model = build_model(task, "softmax", scale_invariant=model_kind == "si")
    with torch.no_grad():          # the SI model computes the same function at any init_scale
        for p in model.parameters():
            p.mul_(init_scale)
    wd = wd_si if optimizer == "sgd_si" else task.train_defaults["weight_decay"]
    cfg = TrainConfig.from_dict({**task.train_defaults, "steps": steps, "lr": lr, "weight_decay": wd,
                                 "optimizer": optimizer, "si_clip": si_clip, "eval_every": steps, "log_every": steps,
                                 "checkpoint_every": steps, "progress": False, "seed": seed, "threads": 1,
                                 "eval_max_batches": 4})
    t0 = time.perf_counter()
    try:
        final = train(model, task, cfg)
        val = final["validation"]
        out = {"accuracy": round(val["accuracy"], 4), "loss": round(val["loss"], 4)}
    except FloatingPointError as e:
        out = {"accuracy": None, "loss": None, "error": str(e)[:60]}
    return {"run": spec, "steps": steps, "wd": wd, "init_scale": init_scale, **out, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--wd-si", type=float, default=1e-3, help="weight decay of the sgd_si runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-scale", type=float, default=1.0, help="multiply every initial parameter by this")
    p.add_argument("--runs", nargs="+", default=["si:sgd_si:0.3", "std:adamw:3e-3", "std:sgd:0.3"],
                   help="MODEL:OPTIMIZER:LR[:SI_CLIP] with MODEL si|std, OPTIMIZER adamw|sgd|sgd_si and "
                        "SI_CLIP a number or none (sgd_si only; default 2)")
    a = p.parse_args()
    torch.set_num_threads(1)
    for spec in a.runs:
        print(json.dumps(run(spec, a.steps, a.wd_si, a.seed, a.init_scale)), flush=True)


if __name__ == "__main__":
    main()
