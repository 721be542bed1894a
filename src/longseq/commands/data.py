"""``longseq data``: build task data into the cache, and print its statistics.

    longseq data build TASK [TASK ...] [--preset P] [--seed S] [--set KEY=VALUE ...]
    longseq data stats TASK [--preset P] [--seed S] [--set KEY=VALUE ...] [--json]

``build`` materialises the task (filling the memory-mapped cache under ``$LONGSEQ_DATA``) and
prints split sizes, fingerprints and the build time; ``stats`` prints sizes, lengths, the padding
fraction and class balance (``longseq.tasks.stats``) plus the task's source fingerprints.
``--set`` overrides a preset setting; values are Python literals (``--set seq_len=512 --set
permute=True --set data_dir=/data/fmnist``), anything else is taken as a string.
"""

from __future__ import annotations

import ast
import json
import time


def register(sub) -> None:
    p = sub.add_parser("data", help="build task data into the cache; print task statistics")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")

    def common(q):
        q.add_argument("--preset", default="quick", help="task preset (default: quick)")
        q.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
        q.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a preset setting (repeatable)",
        )

    b = dsub.add_parser("build", help="build (and cache) one or more tasks")
    b.add_argument("tasks", nargs="+", metavar="TASK")
    common(b)
    b.set_defaults(func=run_build)

    s = dsub.add_parser("stats", help="sizes, lengths, padding and class balance of a task")
    s.add_argument("task", metavar="TASK")
    common(s)
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=run_stats)

    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def parse_overrides(items: list[str]) -> dict:
    """``["seq_len=512", "data_dir=/x"]`` -> ``{"seq_len": 512, "data_dir": "/x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        lowered = {"none": None, "null": None, "true": True, "false": False}
        if value.lower() in lowered:
            out[key] = lowered[value.lower()]
            continue
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _build(name: str, args):
    from .. import tasks

    t0 = time.perf_counter()
    task = tasks.build(name, preset=args.preset, seed=args.seed, **parse_overrides(args.overrides))
    return task, time.perf_counter() - t0


def run_build(args) -> int:
    for name in args.tasks:
        task, dt = _build(name, args)
        m = task.meta
        print(
            f"{name} (preset {m.preset}, seed {m.seed}): {m.kind}, vocab {m.vocab_size}, length {m.seq_len}"
            f"{f', {m.num_classes} classes' if m.num_classes else ''}; built in {dt:.2f} s"
        )
        for split, s in task.splits().items():
            print(f"  {split:<10} {len(s):>9,d} examples  fingerprint {s.fingerprint()[:16]}")
        for key in ("corpus_fingerprint", "source_fingerprint"):
            if key in m.extra:
                print(f"  {key}: {m.extra[key]}")
    return 0


def run_stats(args) -> int:
    task, dt = _build(args.task, args)
    from ..tasks import stats

    st = dict(stats(task), build_seconds=round(dt, 3))
    for s in st["splits"].values():  # share of input positions that are padding
        if s.get("length"):
            s["padding_fraction"] = round(1.0 - s["length"]["mean"] / task.meta.seq_len, 4)
    for key in ("corpus_fingerprint", "source_fingerprint", "split_bytes", "pair"):
        if key in task.meta.extra:
            st[key] = task.meta.extra[key]
    if args.json:
        print(json.dumps(st, indent=1, sort_keys=True, default=str))
    else:
        _print_tree(st)
    return 0


def _print_tree(obj, indent: int = 0) -> None:
    pad = "  " * indent
    for k, v in obj.items():
        if isinstance(v, dict):
            print(f"{pad}{k}:")
            _print_tree(v, indent + 1)
        elif isinstance(v, float):
            print(f"{pad}{k}: {v:.4g}")
        else:
            print(f"{pad}{k}: {v}")
