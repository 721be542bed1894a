"""``longseq arena``: train every mixer on every task (equal parameter budget) and write a leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path

from .train import parse_kv


def _per_name(items: list[str] | None, what: str) -> dict[str, dict]:
    """``["mqar.seq_len=24", "local.window=32"]`` -> ``{"mqar": {"seq_len": 24}, "local": {"window": 32}}``."""
    out: dict[str, dict] = {}
    for k, v in parse_kv(items, what).items():
        name, dot, key = k.partition(".")
        if not dot or not name or not key:
            raise ValueError(f"{what} must look like NAME.KEY=VALUE, got {k}={v!r}")
        out.setdefault(name, {})[key] = v
    return out


def register(sub) -> None:
    p = sub.add_parser("arena", help="train every mixer on every task and write a leaderboard",
                       description="Train each selected mixer on each selected task with the task preset's "
                                   "hyperparameters, every model within 10% of the softmax model's parameter "
                                   "count, evaluate on the test split, benchmark speed and memory, and write "
                                   "OUT/leaderboard.md, OUT/leaderboard.json and OUT/report.html.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="quick", choices=["quick", "lra"], help="task presets to train with")
    p.add_argument("--demo", action="store_true",
                   help="the `make demo` subset (about 10 minutes on 2 CPU cores): mixers softmax, local (window "
                        "32), linear, s4d on mqar (quick preset: 4 pairs in 32 tokens, vocab 64; 2,000 steps) and "
                        "listops (5,000/500/500 examples; 200 steps); speed at L=256,512,1024 "
                        "(explicit --tasks/--mixers/--steps/--task-option win)")
    p.add_argument("--mixers", help="comma-separated mixer names, or 'all' (not given: all, or the demo's four with --demo)")
    p.add_argument("--tasks", help="comma-separated task names, or 'all' (not given: all, or the demo's two with --demo)")
    p.add_argument("--out", default="runs/arena", help="output directory (runs in OUT/runs/TASK/MIXER)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished runs, continue interrupted ones from their checkpoint")
    p.add_argument("--steps", type=int, help="override every run's training steps (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--task-option", action="append", metavar="TASK.KEY=VALUE", help="task setting (repeatable)")
    p.add_argument("--mixer-option", action="append", metavar="MIXER.KEY=VALUE", help="mixer option (repeatable)")
    p.add_argument("--model-option", action="append", metavar="KEY=VALUE",
                   help="model setting for every run, e.g. n_layers=1 (repeatable)")
    p.add_argument("--train-option", action="append", metavar="KEY=VALUE",
                   help="trainer setting for every run, e.g. batch_size=16 (repeatable)")
    p.add_argument("--tolerance", type=float, default=0.10, help="parameter budget: max relative distance to softmax")
    p.add_argument("--no-speed", action="store_true", help="skip the speed/memory benchmark")
    p.add_argument("--speed-lengths", help="comma-separated lengths for the benchmark (default: the preset's)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT's run dirs")
    pf = p.add_argument_group("--protocol pretrain-finetune (longseq.arena.pretrain)")
    pf.add_argument("--protocol", choices=["standard", "pretrain-finetune"], default="standard",
                    help="pretrain-finetune: MLM pre-training of each bidirectional mixer (equal parameters), then "
                         "fine-tuning on the --tasks (classification) beside training from scratch for the same "
                         "total steps; default mixers softmax,deberta,linformer,bigbird,grn,s4d and tasks text,retrieval")
    pf.add_argument("--pretrain-task", default="mlm_code", help="MLM task (mlm_code, mlm_text, mlm_dict)")
    pf.add_argument("--pretrain-steps", type=int, default=600)
    pf.add_argument("--finetune-steps", type=int, default=300)
    pf.add_argument("--seeds", help="comma-separated seeds (default: --seed)")
    pf.add_argument("--layer-lr-decay", type=float, help="fine-tuning: layer-wise lr decay")
    pf.add_argument("--freeze-embeddings", action="store_true", help="fine-tuning: do not train the embeddings")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..arena import DEMO, run_arena, write_report

    if args.protocol == "pretrain-finetune":
        from ._pretrain_arena import run_protocol

        return run_protocol(args)
    out = Path(args.out)
    if args.report_only:
        if not (out / "runs").is_dir():
            raise FileNotFoundError(f"--report-only: no run dirs under {out / 'runs'}")
        write_report(out)
        print(f"report rebuilt: {out / 'leaderboard.md'}, {out / 'report.html'}")
        return 0
    demo = DEMO if args.demo else {}
    task_options = {**demo.get("task_options", {}), **_per_name(args.task_option, "--task-option")}
    tasks = args.tasks or demo.get("tasks", "all")
    mixers = args.mixers or demo.get("mixers", "all")
    mixer_options = {**demo.get("mixer_options", {}), **_per_name(args.mixer_option, "--mixer-option")}
    if args.demo:  # the demo's settings only for the tasks and mixers that run
        from ..arena import resolve_mixers, resolve_tasks

        task_options = {k: v for k, v in task_options.items() if k in resolve_tasks(tasks)}
        mixer_options = {k: v for k, v in mixer_options.items() if k in resolve_mixers(mixers) + ["softmax"]}
    lengths = [int(x) for x in args.speed_lengths.split(",")] if args.speed_lengths else demo.get("speed_lengths")
    lb = run_arena(args.preset, mixers, tasks, out, resume=args.resume,
                   steps=args.steps if args.steps is not None else demo.get("steps"), seed=args.seed,
                   threads=args.threads, device=args.device, task_options=task_options,
                   model_options=parse_kv(args.model_option, "--model-option"),
                   train_options=parse_kv(args.train_option, "--train-option"),
                   mixer_options=mixer_options, tolerance=args.tolerance,
                   speed=not args.no_speed, speed_lengths=lengths, progress=args.progress)
    done = sum(r["status"] == "done" for r in lb["runs"])
    print(f"\n{done} of {len(lb['runs'])} runs done; leaderboard: {out / 'leaderboard.md'}, report: {out / 'report.html'}")
    print((out / "leaderboard.md").read_text().split("\n## ")[0])
    return 0
