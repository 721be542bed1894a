"""``longseq bench {speed,peers,generate,ratios}``: which mixer is fastest and leanest at my length?

    longseq bench speed --mixers softmax,linear --lengths 1024,4096,16384 --causal --out bench-out
    longseq bench peers --out bench-peers
    longseq bench generate --mixers softmax,s4d --prompt 1024 --new 1024
    longseq bench ratios --mixers s4,s4d --lengths 16384 --rounds 5
    longseq bench structured --sizes 256,1024,4096 --ranks full,256 --out bench-hmm

Each configuration runs in a fresh subprocess; results go to ``--out`` (results.json,
results.md, speed.png, memory.png) and the table is printed. See :mod:`longseq.bench`.
"""

from __future__ import annotations

import argparse
import json


def _csv(kind):
    def parse(s: str):
        try:
            return [kind(x) for x in s.split(",") if x.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {s!r}") from e

    return parse


def _names(s: str | None):
    return None if s in (None, "all") else _csv(str)(s)


def _add_common(p, *, lengths: bool = True) -> None:
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4, help="number of heads (default 4)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    p.add_argument(
        "--options",
        type=json.loads,
        default=None,
        metavar="JSON",
        help='per-mixer options, e.g. \'{"performer": {"nb_features": 128}}\'',
    )
    p.add_argument("--out", default=None, metavar="DIR", help="write results.json, results.md and plots here")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each configuration in a fresh process (default); --no-isolate: all in this "
        "process, for quick checks (peak memory then depends on earlier runs)",
    )
    if lengths:
        p.add_argument(
            "--lengths",
            type=_csv(int),
            default=[1024, 2048, 4096, 8192, 16384],
            help="comma-separated sequence lengths (default 1024,...,16384)",
        )
        p.add_argument("--causal", action="store_true", help="causal mode (default bidirectional)")
        p.add_argument(
            "--backward",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="also measure forward+backward (default on)",
        )
        p.add_argument("--repeats", type=int, default=5, help="timed runs after warm-up (default 5)")
        p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
        p.add_argument(
            "--memory-repeats",
            type=int,
            default=1,
            metavar="N",
            help="peak memory: median of N calls after a warm-up (default 1)",
        )
        p.add_argument(
            "--time-budget",
            type=float,
            default=30.0,
            metavar="S",
            help="stop a mixer once one call takes longer than S seconds (default 30)",
        )
        p.add_argument(
            "--memory-budget",
            type=float,
            default=None,
            metavar="MB",
            help="stop a mixer once its peak memory exceeds MB (default: none)",
        )


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark mixers: speed and memory, peers, generation",
        description="Benchmarks on this machine, each configuration in a fresh process.",
    )
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    s = bsub.add_parser("speed", help="fwd / fwd+bwd time, peak memory, GFLOP/s of mixers across lengths")
    s.add_argument("--mixers", default="all", help="comma-separated mixer names or 'all' (default)")
    _add_common(s)
    s.set_defaults(func=run_speed)

    q = bsub.add_parser("peers", help="the same benchmark for peer packages, next to their longseq twins")
    q.add_argument("--peers", default="all", help="comma-separated peer names or 'all' (default)")
    _add_common(q)
    q.set_defaults(func=run_peers)

    g = bsub.add_parser("generate", help="prefill time and decoding tokens/s with step (KV cache / state)")
    g.add_argument("--mixers", default="all", help="comma-separated causal mixer names or 'all' (default)")
    g.add_argument("--prompt", type=int, default=1024, help="prompt tokens (default 1024)")
    g.add_argument("--new", type=int, default=1024, help="generated tokens (default 1024)")
    g.add_argument("--layers", type=int, default=2, help="CausalLM layers (default 2)")
    g.add_argument("--vocab", type=int, default=256, help="vocabulary size (default 256)")
    _add_common(g, lengths=False)
    g.set_defaults(func=run_generate)

    r = bsub.add_parser("ratios", help="speed-ups over softmax at one length, timed in alternation over rounds")
    r.add_argument("--mixers", required=True, help="comma-separated mixer names")
    r.add_argument("--baseline", default="softmax", help="the mixer the others are compared with (default softmax)")
    r.add_argument("--rounds", type=int, default=5, help="alternations of the baseline and the mixers (default 5)")
    _add_common(r)
    r.set_defaults(func=run_ratios, lengths=[16384], repeats=3)

    t = bsub.add_parser(
        "structured",
        help="training-step time and memory of structured models (HMM) vs number of states, full rank against low rank",
    )
    t.add_argument(
        "--family",
        default="hmm",
        choices=["hmm", "pcfg"],
        help="model family: hmm (sizes = states) or pcfg (sizes = nonterminals); default hmm",
    )
    t.add_argument(
        "--sizes",
        type=_csv(int),
        default=None,
        help="comma-separated sizes (HMM: number of states; default 256,...,16384)",
    )
    t.add_argument("--ranks", default=None, help="comma-separated ranks, 'full' for full rank (default full,256)")
    t.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="family setting (repeatable); hmm and pcfg: batch, length, vocab_size, emb_dim",
    )
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--repeats", type=int, default=3, help="timed steps after warm-up (default 3)")
    t.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    t.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time the ranks of each size in alternation this many times, each in a fresh worker; "
        "the speed-up is the median of the per-round ratios (default 1)",
    )
    t.add_argument(
        "--time-budget",
        type=float,
        default=60.0,
        metavar="S",
        help="stop a rank once one step takes longer than S seconds (default 60)",
    )
    t.add_argument(
        "--memory-budget",
        type=float,
        default=None,
        metavar="MB",
        help="stop a rank once a step's peak memory exceeds MB (default: none)",
    )
    t.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    t.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda[:i]")
    t.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write results.json, results.md, time_vs_size.png, memory_vs_size.png here",
    )
    t.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="each configuration in a fresh process (default)",
    )
    t.set_defaults(func=run_structured)


def _speed_config(args):
    from ..bench import SpeedConfig

    return SpeedConfig(
        lengths=args.lengths,
        batch=args.batch,
        d_model=args.d_model,
        heads=args.heads,
        causal=args.causal,
        dtype=args.dtype,
        backward=args.backward,
        repeats=args.repeats,
        warmup=args.warmup,
        memory_repeats=args.memory_repeats,
        time_budget=args.time_budget,
        memory_budget=args.memory_budget,
        threads=args.threads,
        device=args.device,
        isolate=args.isolate,
    )


def _finish(res, args) -> int:
    from ..bench import format_table, write_report

    print(format_table(res))
    if args.out:
        paths = write_report(res, args.out)
        print(f"\nwrote {', '.join(paths)}")
    return _failures(res)


def _failures(res) -> int:
    """Exit status 1, with the list, when a configuration raised (status ``error``). Budget stops
    (``skipped``, ``timeout``, ``oom``, a worker killed for memory: ``crashed``) are results, not failures."""
    import sys

    bad = [r for r in res.get("rows", []) if r.get("status") == "error"]
    if not bad:
        return 0
    print(
        f"longseq bench: {len(bad)} configuration(s) failed:\n"
        + "\n".join(
            f"  {r.get('source', '')}{'/' if r.get('source') else ''}{r.get('name')} L={r.get('L', '-')}: {r.get('error', '')}"
            for r in bad
        ),
        file=sys.stderr,
    )
    return 1


def _save_partial(args):
    """Keep results.json / results.md up to date while running, so an interrupted run keeps them."""
    if not args.out:
        return None
    from ..bench import write_report

    return lambda res: write_report(res, args.out, plots=False)


def run_speed(args) -> int:
    from ..bench import run_speed

    res = run_speed(_names(args.mixers), _speed_config(args), options=args.options, on_update=_save_partial(args))
    return _finish(res, args)


def run_peers(args) -> int:
    from ..bench import run_peers

    res = run_peers(_names(args.peers), _speed_config(args), twin_options=args.options, on_update=_save_partial(args))
    return _finish(res, args)


def run_ratios(args) -> int:
    from ..bench import RatioConfig, format_ratios, run_ratios, write_ratios

    cfg = RatioConfig(**vars(_speed_config(args)), rounds=args.rounds)
    res = run_ratios(_csv(str)(args.mixers), cfg, baseline=args.baseline, options=args.options)
    print(format_ratios(res))
    if args.out:
        print(f"wrote {', '.join(write_ratios(res, args.out))}")
    return 0


def run_generate(args) -> int:
    from ..bench import GenerateConfig, run_generate

    cfg = GenerateConfig(
        prompt=args.prompt,
        new=args.new,
        batch=args.batch,
        d_model=args.d_model,
        heads=args.heads,
        n_layers=args.layers,
        vocab_size=args.vocab,
        dtype=args.dtype,
        threads=args.threads,
        device=args.device,
        isolate=args.isolate,
    )
    return _finish(run_generate(_names(args.mixers), cfg, options=args.options, on_update=_save_partial(args)), args)


def run_structured(args) -> int:
    from ..bench.structured import StructuredConfig, format_structured, run_structured, write_structured
    from ._kv import parse_kv

    ranks = None
    if args.ranks is not None:
        try:
            ranks = [None if r.strip() == "full" else int(r) for r in args.ranks.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"--ranks must be comma-separated integers or 'full', got {args.ranks!r}") from None
    cfg = StructuredConfig(
        family=args.family,
        sizes=args.sizes,
        ranks=ranks,
        settings=parse_kv(args.setting, "--setting"),
        dtype=args.dtype,
        repeats=args.repeats,
        rounds=args.rounds,
        warmup=args.warmup,
        time_budget=args.time_budget,
        memory_budget=args.memory_budget,
        threads=args.threads,
        device=args.device,
        isolate=args.isolate,
    )
    partial = (lambda res: write_structured(res, args.out, plots=False)) if args.out else None
    res = run_structured(cfg, on_update=partial)
    print(format_structured(res))
    if args.out:
        print(f"wrote {', '.join(write_structured(res, args.out))}")
    return 0
