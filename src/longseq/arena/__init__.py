"""``longseq arena``: every mixer on every task at an equal parameter budget, and a leaderboard.

    from longseq.arena import run_arena, write_report
    lb = run_arena("quick", mixers=["softmax", "s4d"], tasks=["mqar"], out="runs/arena")
    write_report("runs/arena")      # leaderboard.md / .json and report.html, from the run dirs alone

See :mod:`longseq.arena.runner` (runs, resume, n/a rules), :mod:`longseq.arena.budget` (the
parameter-budget search) and :mod:`longseq.arena.report` (the report files).
"""

from .budget import TOLERANCE, count_parameters, match_budget
from .published import load_published, published_score
from .report import collect, write_report
from .runner import DEMO, PRESETS, plan_run, resolve_mixers, resolve_tasks, run_arena

__all__ = [
    "run_arena",
    "write_report",
    "collect",
    "plan_run",
    "match_budget",
    "count_parameters",
    "TOLERANCE",
    "PRESETS",
    "DEMO",
    "resolve_mixers",
    "resolve_tasks",
    "load_published",
    "published_score",
]
