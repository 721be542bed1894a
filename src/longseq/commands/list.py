"""``longseq list``: the registered mixers (and tasks) as a table."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("list", help="list registered mixers (name, family, complexity, modes, paper)")
    p.add_argument("--tasks", action="store_true", help="list tasks instead of mixers")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import mixers, tasks

    if args.tasks:
        for n in tasks.names():
            print(n)
        return 0
    rows = [("name", "family", "complexity", "causal", "bidir", "step", "paper")]
    for n in mixers.names():
        s = mixers.spec(n)
        yes = lambda b: "yes" if b else "-"  # noqa: E731
        rows.append((n, s.family, s.complexity, yes(s.causal), yes(s.bidirectional), yes(s.step), s.paper))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6])
    return 0
