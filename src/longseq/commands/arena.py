"""``longseq arena``: train every mixer on every task (equal parameter budget) and write a leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._kv import parse_kv  # noqa: F401
from ._kv import per_name as _per_name


def register(sub) -> None:
    p = sub.add_parser(
        "arena",
        help="train every mixer on every task and write a leaderboard",
        description="Train each selected mixer on each selected task with the task preset's "
        "hyperparameters, every model within 10% of the softmax model's parameter "
        "count, evaluate on the test split, benchmark speed and memory, and write "
        "OUT/leaderboard.md, OUT/leaderboard.json and OUT/report.html.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=["quick", "lra"], help="task presets to train with (default quick)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="the `make demo` subset (about 10 minutes on 2 CPU cores): mixers softmax, local (window "
        "32), linear, s4d on mqar (quick preset: 4 pairs in 32 tokens, vocab 64; 2,000 steps) and "
        "listops (5,000/500/500 examples; 200 steps); speed at L=256,512,1024 "
        "(explicit --tasks/--mixers/--steps/--task-option win)",
    )
    p.add_argument(
        "--mixers", help="comma-separated mixer names, or 'all' (not given: all, or the demo's four with --demo)"
    )
    p.add_argument(
        "--tasks", help="comma-separated task names, or 'all' (not given: all, or the demo's two with --demo)"
    )
    p.add_argument("--out", default="runs/arena", help="output directory (runs in OUT/runs/TASK/MIXER)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the arena stored in OUT/arena.json: its selection and settings (arguments not "
        "given are taken from it, conflicting ones are refused); finished runs are skipped, "
        "interrupted ones continue from their checkpoint",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the arena already in OUT (its runs and report)")
    p.add_argument(
        "--allow-change",
        metavar="steps",
        help="with --resume: let --steps differ from the stored arena (unfinished runs use the new count)",
    )
    p.add_argument("--steps", type=int, help="override every run's training steps (smoke runs)")
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--task-option", action="append", metavar="TASK.KEY=VALUE", help="task setting (repeatable)")
    p.add_argument("--mixer-option", action="append", metavar="MIXER.KEY=VALUE", help="mixer option (repeatable)")
    p.add_argument(
        "--model-option",
        action="append",
        metavar="KEY=VALUE",
        help="model setting for every run, e.g. n_layers=1 (repeatable)",
    )
    p.add_argument(
        "--train-option",
        action="append",
        metavar="KEY=VALUE",
        help="trainer setting for every run, e.g. batch_size=16 (repeatable)",
    )
    p.add_argument("--tolerance", type=float, help="parameter budget: max relative distance to softmax (default 0.1)")
    p.add_argument("--no-speed", action="store_true", default=None, help="skip the speed/memory benchmark")
    p.add_argument("--speed-lengths", help="comma-separated lengths for the benchmark (default: the preset's)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per run")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from OUT's run dirs")
    pf = p.add_argument_group("--protocol pretrain-finetune (longseq.arena.pretrain)")
    pf.add_argument(
        "--protocol",
        choices=["standard", "pretrain-finetune"],
        default="standard",
        help="pretrain-finetune: MLM pre-training of each bidirectional mixer (equal parameters), then "
        "fine-tuning on the --tasks (classification) beside training from scratch for the same "
        "total steps; default mixers softmax,deberta,linformer,bigbird,grn,s4d and tasks text,retrieval",
    )
    pf.add_argument("--pretrain-task", default="mlm_code", help="MLM task (mlm_code, mlm_text, mlm_dict)")
    pf.add_argument("--pretrain-steps", type=int, default=600)
    pf.add_argument("--finetune-steps", type=int, default=300)
    pf.add_argument("--seeds", help="comma-separated seeds (default: --seed)")
    pf.add_argument("--layer-lr-decay", type=float, help="fine-tuning: layer-wise lr decay")
    pf.add_argument("--freeze-embeddings", action="store_true", help="fine-tuning: do not train the embeddings")
    p.set_defaults(func=run)


DEFAULTS = {"preset": "quick", "seed": 0, "device": "auto", "tolerance": 0.10}


def _from_stored(args, stored: dict) -> None:
    """``--resume``: every selection or setting not given on the command line comes from arena.json."""
    for k in DEFAULTS:
        if getattr(args, k) is None:
            setattr(args, k, stored.get(k, DEFAULTS[k]))
    if args.threads is None:
        args.threads = stored.get("threads")
    if args.no_speed is None:  # not part of the identity, but the stored choice by default
        args.no_speed = not stored.get("speed", True)
    if args.speed_lengths is None and stored.get("speed_lengths"):
        args.speed_lengths = ",".join(str(n) for n in stored["speed_lengths"])
    if args.tasks is None and not args.demo:
        args.tasks = ",".join(stored.get("tasks") or []) or None
    if args.mixers is None and not args.demo:
        args.mixers = ",".join(stored.get("mixers") or []) or None
    if args.steps is None and not args.demo:
        args.stored_steps = stored.get("steps")
    given = {
        "task_options": args.task_option,
        "mixer_options": args.mixer_option,
        "model_options": args.model_option,
        "train_options": args.train_option,
    }
    for k, v in given.items():
        if v is None and not args.demo:
            setattr(args, "stored_" + k, stored.get(k) or {})


def _validate(args) -> None:
    """The flags' values, before any work starts."""
    from ..train.trainer import check_settings, resolve_device

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive integer, got {args.steps}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    if not (args.tolerance == args.tolerance and 0 < args.tolerance < 1):
        raise ValueError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    resolve_device(args.device)
    check_settings(parse_kv(args.train_option, "--train-option"))


def run(args) -> int:
    from ..arena import DEMO, run_arena, write_report
    from ..arena.runner import failures, stored_settings

    if args.protocol == "pretrain-finetune":
        from ._pretrain_arena import run_protocol

        for k, v in DEFAULTS.items():  # its own resume (settings.json) restores the rest
            if getattr(args, k) is None:
                setattr(args, k, v)
        return run_protocol(args)
    out = Path(args.out)
    if args.report_only:
        if not (out / "runs").is_dir():
            raise FileNotFoundError(f"--report-only: no run dirs under {out / 'runs'}")
        write_report(out)
        print(f"report rebuilt: {out / 'leaderboard.md'}, {out / 'report.html'}")
        return 0
    if args.allow_change and not args.resume:
        raise ValueError("--allow-change only applies with --resume")
    if args.resume:
        stored = stored_settings(out)
        if stored is None:
            raise FileNotFoundError(f"--resume: no readable arena.json in {out}: nothing to resume")
        _from_stored(args, stored)
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    _validate(args)
    demo = DEMO if args.demo else {}
    task_options = {
        **demo.get("task_options", {}),
        **getattr(args, "stored_task_options", {}),
        **_per_name(args.task_option, "--task-option"),
    }
    tasks = args.tasks or demo.get("tasks", "all")
    mixers = args.mixers or demo.get("mixers", "all")
    mixer_options = {
        **demo.get("mixer_options", {}),
        **getattr(args, "stored_mixer_options", {}),
        **_per_name(args.mixer_option, "--mixer-option"),
    }
    if args.demo:  # the demo's settings only for the tasks and mixers that run
        from ..arena import resolve_mixers, resolve_tasks

        task_options = {k: v for k, v in task_options.items() if k in resolve_tasks(tasks)}
        mixer_options = {k: v for k, v in mixer_options.items() if k in resolve_mixers(mixers) + ["softmax"]}
    lengths = [int(x) for x in args.speed_lengths.split(",")] if args.speed_lengths else demo.get("speed_lengths")
    steps = args.steps if args.steps is not None else getattr(args, "stored_steps", demo.get("steps"))
    model_options = parse_kv(args.model_option, "--model-option") or getattr(args, "stored_model_options", {})
    train_options = parse_kv(args.train_option, "--train-option") or getattr(args, "stored_train_options", {})
    lb = run_arena(
        args.preset,
        mixers,
        tasks,
        out,
        resume=args.resume,
        overwrite=args.overwrite,
        allow_changes=[args.allow_change] if args.allow_change else [],
        steps=steps,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        task_options=task_options,
        model_options=model_options,
        train_options=train_options,
        mixer_options=mixer_options,
        tolerance=args.tolerance,
        speed=not args.no_speed,
        speed_lengths=lengths,
        progress=args.progress,
    )
    done = sum(r["status"] == "done" for r in lb["runs"])
    print(
        f"\n{done} of {len(lb['runs'])} runs done; leaderboard: {out / 'leaderboard.md'}, report: {out / 'report.html'}"
    )
    print((out / "leaderboard.md").read_text().split("\n## ")[0])
    failed = failures(out, lb)
    if failed:
        print(f"longseq arena: {len(failed)} failure(s):\n" + "\n".join(f"  {f}" for f in failed), file=sys.stderr)
        return 1
    return 0
