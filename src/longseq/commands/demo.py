"""``longseq demo``: the Quick-start job — a causal LM and a classifier learn associative recall.

Trains ``softmax`` on the quick MQAR preset as a causal LM (accuracy on query positions) and as a
sequence classifier (single query, classify its value), a minute or two each on 2 CPU cores,
and prints their test accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small causal LM and a classifier on associative recall")
    p.add_argument("--mixer", default="softmax")
    p.add_argument("--out", default="runs/quick-demo", help="run directories OUT/lm and OUT/classifier")
    p.add_argument("--steps", type=int, help="override the preset's training steps")
    p.add_argument("--seed", type=int, default=0, help="seeds data, initialisation and batch order")
    p.add_argument("--overwrite", action="store_true", help="replace the runs already in OUT")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import tasks
    from ..train import TrainConfig, build_model, train
    from ..train.rundir import check_out_dir

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    for sub in ("lm", "classifier"):
        check_out_dir(Path(args.out) / sub, resume=False, overwrite=args.overwrite)
    results = []
    for label, classify in (("causal LM", False), ("classifier", True)):
        task = tasks.build("mqar", preset="quick", classify=classify, seed=args.seed)
        torch.manual_seed(args.seed)
        model = build_model(task, args.mixer)
        cfg = TrainConfig.from_dict(
            {**task.train_defaults, "seed": args.seed, **({"steps": args.steps} if args.steps is not None else {})}
        )
        print(
            f"\n== {label}: {args.mixer} on mqar (quick{', classify' if classify else ''}), "
            f"{model.num_parameters():,} parameters"
        )
        t0 = time.perf_counter()
        final = train(
            model, task, cfg, Path(args.out) / ("lm" if not classify else "classifier"), overwrite=args.overwrite
        )
        results.append((label, final["test"]["accuracy"], time.perf_counter() - t0))
    print("\nmodel        test accuracy   time")
    for label, acc, dt in results:
        print(f"{label:<12} {acc:>13.4f}   {dt:.0f} s")
    print(f"runs saved under {args.out}/ (inspect with `longseq info {args.out}/lm`)")
    return 0
