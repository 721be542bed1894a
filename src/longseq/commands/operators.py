"""``longseq operators``: train neural operators on an operator-learning task and tabulate the relative
L2 test error at every resolution (train at s, test at s and zero-shot at the others).

    longseq operators --task burgers --operators fno,lowrank --out runs/ops-burgers [--steps N] [--speed]
    longseq operators --task darcy --operators fno,lowrank,unet --out runs/ops-darcy --report-only

Each operator trains through the standard trainer into ``OUT/<operator>/`` (a finished run is reused;
``--resume`` continues an interrupted one). ``OUT/table.md`` and ``OUT/table.json`` hold the table with
the published numbers beside ours; ``--speed`` adds the seconds per sample of each model's forward
(batch 20, one thread) and of the numerical solver run at each resolution.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("operators", help="train neural operators on burgers/darcy and tabulate error per resolution")
    p.add_argument("--task", required=True, choices=["burgers", "darcy"])
    p.add_argument("--preset", default="quick")
    p.add_argument("--operators", default="fno", help="comma-separated: fno, lowrank, unet (2D only)")
    p.add_argument("--out", required=True, help="output directory (one run directory per operator)")
    p.add_argument(
        "--task-option",
        action="append",
        metavar="KEY=VALUE",
        help="task setting override, e.g. resolution=128 (the training resolution; repeatable)",
    )
    p.add_argument("--steps", type=int, help="training steps (default: the task preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixer-option", action="append", metavar="KEY=VALUE", help="operator option (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    p.add_argument("--report-only", action="store_true", help="only evaluate the finished runs in OUT")
    p.add_argument("--speed", action="store_true", help="time each model and the solver per sample")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _solver_seconds(task, resolution: int, n: int = 4) -> float:
    """Seconds per sample of the task's numerical solver run directly at ``resolution`` on the first
    ``n`` test inputs (Burgers: ETDRK4 at the preset's dt; Darcy: PCG on the subsampled coefficient)."""
    import numpy as np

    from ..tasks import pde

    cfg = task.meta.extra["config"]
    a = task.split_at("test", resolution).inputs[:n].double().numpy()
    t0 = time.perf_counter()
    if task.meta.name == "burgers":
        pde.burgers_etdrk4(a, nu=cfg["nu"], dt=cfg["dt"], batch=n)
    else:
        pde.darcy_solve(np.ascontiguousarray(a), batch=n)
    return (time.perf_counter() - t0) / len(a)


def run(args) -> int:
    import torch

    from .. import models, tasks
    from ..operators import OPERATORS
    from ..operators.evaluate import PUBLISHED, markdown_table, resolution_table, seconds_per_sample
    from ..train import TrainConfig, build_model, train
    from ..utils.io import atomic_write
    from ._kv import parse_kv

    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.operators.split(",") if n.strip()]
    bad = [n for n in names if n not in OPERATORS]
    if bad or not names:
        raise ValueError(f"unknown operator(s) {bad}; operators: {', '.join(OPERATORS)}")
    task = tasks.build(args.task, preset=args.preset, seed=args.seed, **parse_kv(args.task_option, "--task-option"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, params, speed = {}, {}, {}
    for name in names:
        run_dir = out / name
        if not (run_dir / "final.json").exists():
            if args.report_only:
                print(f"{name}: no finished run in {run_dir}; skipped")
                continue
            torch.manual_seed(args.seed)
            model = build_model(task, name, mixer_options=parse_kv(args.mixer_option, "--mixer-option") or None)
            over = {"steps": args.steps} if args.steps else {}
            cfg = TrainConfig.from_dict(
                {
                    **task.train_defaults,
                    **over,
                    "seed": args.seed,
                    "threads": args.threads,
                    "progress": not args.no_progress,
                }
            )
            print(f"{args.task}: training {name} ({model.num_parameters():,} parameters) -> {run_dir}")
            train(
                model,
                task,
                cfg,
                run_dir,
                resume=args.resume and (run_dir / "checkpoint.pt").exists(),
                run_config={"cli": {"task": args.task, "operator": name, "preset": args.preset}},
            )
        model = models.load(run_dir / "model")
        params[name] = sum(p.numel() for p in model.parameters())
        rows[name] = resolution_table(model, task)
        print(f"{name}: " + ", ".join(f"s={s} {v:.4f}" for s, v in rows[name].items()))
        if args.speed:
            speed[name] = {
                s: seconds_per_sample(model, task.split_at("test", s).inputs[:20]) for s in task.resolutions()
            }
    result = {
        "task": args.task,
        "preset": args.preset,
        "seed": args.seed,
        "train_resolution": task.meta.extra["resolution"],
        "relative_l2": rows,
        "parameters": params,
        "published": PUBLISHED.get(args.task, {}),
    }
    md = [
        f"# {args.task} ({args.preset}): relative L2 test error per resolution "
        f"(trained at s={result['train_resolution']}, marked *)",
        "",
        markdown_table(rows, result["train_resolution"], PUBLISHED.get(args.task), params),
    ]
    if args.speed:
        solver = {s: _solver_seconds(task, s) for s in task.resolutions()}
        result["seconds_per_sample"] = {"models": speed, "solver": solver}
        md += [
            "",
            f"Seconds per sample ({args.threads} thread(s); models: forward, batch 20; solver: run at that "
            "resolution on 4 test inputs):",
            "",
        ]
        md += [f"- {n}: " + ", ".join(f"s={s} {v:.5f}" for s, v in sp.items()) for n, sp in speed.items()]
        md += ["- solver: " + ", ".join(f"s={s} {v:.5f}" for s, v in solver.items())]
    atomic_write(out / "table.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1, default=str)))
    atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    print("\n".join(md))
    return 0
