"""``longseq bench structured``: time and peak memory of one training step (forward + backward of
the exact log-likelihood) of structured latent-variable models, full rank against low rank, as
the state space grows. Each (family, size, rank) runs in a fresh process
(:mod:`longseq.bench._worker`, job kind ``"structured"``): one process times the step (median of
``repeats`` after ``warmup``), a second one measures its peak memory with glibc's mmap threshold
fixed (see :mod:`longseq.bench._worker` for the method).

Families are entries of :data:`FAMILIES` (a name -> :class:`Family`): the HMM (Chiu & Rush 2020;
low rank: Chiu, Deng & Rush 2021) and the neural PCFG (Kim et al. 2019; rank space: Yang et al. 2021-22) are here; another family is added by
one more entry with its own ``build_step`` and defaults. A rank stops at the first size whose step
exceeds the time budget or the memory budget, or that fails; the larger sizes are listed as
skipped.

Outputs (``--out DIR``): ``results.json`` (the rows, the configuration and the machine),
``results.md`` (the table, with the speed-up of each rank over full rank at the same size) and
``time_vs_size.png`` / ``memory_vs_size.png`` (log-log), all written atomically.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils.io import atomic_write
from .speed import machine_info, run_job
from .structured_worker import FAMILIES, Family, measure_structured  # noqa: F401  (re-exported)

__all__ = [
    "FAMILIES",
    "Family",
    "StructuredConfig",
    "format_structured",
    "measure_structured",
    "run_structured",
    "write_structured",
]


@dataclass
class StructuredConfig:
    family: str = "hmm"
    sizes: list[int] | None = None  # None: the family's default
    ranks: list[int | None] | None = None  # None: the family's default; None inside = full rank
    settings: dict = field(default_factory=dict)  # overrides of the family's settings
    dtype: str = "float32"
    repeats: int = 3
    warmup: int = 1
    rounds: int = 1  # > 1: the ranks of a size timed in alternation, this many times
    time_budget: float = 60.0  # seconds per step: larger sizes of that rank are skipped
    memory_budget: float | None = None  # MB
    threads: int | None = None
    device: str = "auto"
    seed: int = 0
    timeout: float | None = 900.0  # seconds per worker
    isolate: bool = True

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown structured family {self.family!r}; known: {', '.join(FAMILIES)}")
        fam = FAMILIES[self.family]
        self.sizes = list(fam.sizes if self.sizes is None else self.sizes)
        self.ranks = list(fam.ranks if self.ranks is None else self.ranks)
        unknown = sorted(set(self.settings) - set(fam.settings))
        if unknown:
            raise ValueError(f"unknown {self.family} setting(s) {unknown}; settings: {', '.join(fam.settings)}")
        self.settings = {**fam.settings, **self.settings}
        if not self.sizes or any(int(n) < 1 for n in self.sizes):
            raise ValueError(f"sizes must be positive integers, got {self.sizes}")
        if any(r is not None and int(r) < 1 for r in self.ranks):
            raise ValueError(f"ranks must be positive integers or None (full rank), got {self.ranks}")
        if self.repeats < 1 or self.warmup < 0 or self.rounds < 1:
            raise ValueError(
                f"repeats and rounds must be >= 1 and warmup >= 0, got repeats={self.repeats}, "
                f"rounds={self.rounds}, warmup={self.warmup}"
            )

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def run_structured(config: StructuredConfig | None = None, *, log=None, on_update=None) -> dict:
    """Every size (increasing), every rank; with ``rounds > 1`` the ranks of one size are timed in
    alternation (full, r, full, r, ...; each timing a fresh worker), so a machine whose speed drifts
    over minutes moves every rank alike: ``speedup_vs_full`` is then the median of the per-round
    ratios (range in ``speedup_range``) and ``step_ms`` summarises the per-round medians."""
    cfg = config or StructuredConfig()
    log = log or logging.getLogger(__name__).info  # the CLI shows INFO on stderr
    fam = FAMILIES[cfg.family]
    device = cfg.resolved_device()
    res = {
        "schema": 1,
        "kind": "structured",
        "family": cfg.family,
        "size_name": fam.size_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "config": asdict(cfg) | {"device": device},
        "machine": machine_info(device, cfg.threads),
        "rows": [],
    }
    stop: dict = {}
    for size in sorted(int(n) for n in cfg.sizes):
        rows = {}
        for rank in cfg.ranks:
            rows[rank] = {"family": cfg.family, "size": size, "rank": rank}
            if stop.get(rank):
                rows[rank] |= {"status": "skipped", "reason": stop[rank]}

        def job(rank, measure, size=size):
            return {
                "kind": "structured",
                "family": cfg.family,
                "size": size,
                "rank": rank,
                "settings": cfg.settings,
                "dtype": cfg.dtype,
                "threads": cfg.threads,
                "device": device,
                "seed": cfg.seed,
                "repeats": cfg.repeats,
                "warmup": cfg.warmup,
                "time_budget": cfg.time_budget,
                "measure": measure,
            }

        per_round: dict = {rank: [] for rank in cfg.ranks}
        for _ in range(cfg.rounds):
            for rank in cfg.ranks:
                row = rows[rank]
                if row.get("status") not in (None, "ok") or row.get("over_time_budget"):
                    continue
                r = run_job(job(rank, "time"), cfg.timeout, cfg.isolate)
                row |= {k: v for k, v in r.items() if k != "step_ms"}
                if r["status"] == "ok":
                    per_round[rank].append(r["step_ms"])
        for rank in cfg.ranks:
            row = rows[rank]
            if per_round[rank]:
                medians = [t["median"] for t in per_round[rank]]
                row["step_ms"] = per_round[rank][0] if len(medians) == 1 else summarize_ms(medians)
                row["rounds_ms"] = medians
            if row.get("status") == "ok" and not row.get("over_time_budget"):
                mem = run_job(job(rank, "memory"), cfg.timeout, cfg.isolate)
                if mem["status"] == "ok":
                    row |= {"peak_mb": mem["peak_mb"], "memory_method": mem["memory_method"]}
                else:
                    row |= {"status": mem["status"], "error": "memory worker: " + mem.get("error", "")}
            if row["status"] == "skipped":
                pass
            elif row["status"] != "ok":
                stop[rank] = f"{fam.size_name}={size} failed ({row['status']})"
            elif row.get("over_time_budget"):
                stop[rank] = f"{fam.size_name}={size} took over the {cfg.time_budget:g} s time budget"
            elif cfg.memory_budget and row.get("peak_mb", 0) > cfg.memory_budget:
                stop[rank] = f"{fam.size_name}={size} used over the {cfg.memory_budget:g} MB memory budget"
            res["rows"].append(row)
            log(_line(row, fam.size_name))
        if on_update:
            on_update(res)
    _speedups(res)
    return res


def summarize_ms(values_ms: list[float]) -> dict:
    from ._measure import summarize

    return summarize([v / 1e3 for v in values_ms])


def _speedups(res: dict) -> None:
    """``speedup_vs_full``: full-rank step time / this row's step time at the same size (with
    several rounds: the median of the per-round ratios, and their range)."""
    full = {
        r["size"]: r for r in res["rows"] if r["rank"] is None and r["status"] == "ok" and not r.get("over_time_budget")
    }
    for r in res["rows"]:
        f = full.get(r["size"])
        if r["status"] != "ok" or r["rank"] is None or f is None or r.get("over_time_budget"):
            continue
        a, b = f.get("rounds_ms", []), r.get("rounds_ms", [])
        if len(a) > 1 and len(a) == len(b):
            ratios = sorted(x / y for x, y in zip(a, b))
            r["speedup_vs_full"] = (
                ratios[len(ratios) // 2]
                if len(ratios) % 2
                else 0.5 * (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2])
            )
            r["speedup_range"] = [ratios[0], ratios[-1]]
        else:
            r["speedup_vs_full"] = f["step_ms"]["median"] / r["step_ms"]["median"]


def _rank_name(rank) -> str:
    return "full" if rank is None else f"r={rank}"


def _line(r: dict, size_name: str) -> str:
    head = f"  {size_name}={r['size']:<6} {_rank_name(r['rank']):<7}"
    if r["status"] != "ok":
        return f"{head} {r['status']}: {r.get('reason') or r.get('error', '')}"
    t = r["step_ms"]
    over = " (over budget, one call)" if r.get("over_time_budget") else ""
    mem = f"  peak {r['peak_mb']:.0f} MB" if r.get("peak_mb") is not None else ""
    return f"{head} step {t['median']:10.1f} ms{over}{mem}"


def format_structured(res: dict) -> str:
    """The markdown table."""
    name = res["size_name"]
    rounds = res["config"].get("rounds", 1)
    lines = [
        (
            f"| {name} | rank | step ms (median, IQR{' of the round medians' if rounds > 1 else ''}) | peak MB "
            f"| speed-up vs full{f' (median of {rounds} alternating rounds, range)' if rounds > 1 else ''} | note |"
        ),
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in sorted(res["rows"], key=lambda r: (r["size"], r["rank"] is not None, r["rank"] or 0)):
        if r["status"] == "ok":
            t = r["step_ms"]
            ms = f"{t['median']:.1f} ({t['q25']:.1f}-{t['q75']:.1f})"
            note = "over time budget (one call)" if r.get("over_time_budget") else ""
        else:
            ms, note = "-", f"{r['status']}: {r.get('reason') or r.get('error', '')}"
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        sp = f"{r['speedup_vs_full']:.1f}x" if r.get("speedup_vs_full") else "-"
        if r.get("speedup_range"):
            sp += f" ({r['speedup_range'][0]:.1f}-{r['speedup_range'][1]:.1f})"
        lines.append(f"| {r['size']} | {_rank_name(r['rank'])} | {ms} | {peak} | {sp} | {note} |")
    s = res["config"]["settings"]
    m = res["machine"]
    head = (
        f"{res['family']}: one training step (forward + backward of the exact log-likelihood), "
        f"settings {json.dumps(s)}, {res['config']['dtype']}, {m['device']} ({m['processor']}, "
        f"{m['torch_threads']} torch threads), torch {m['torch']}, {res['created']}"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def _plot(res: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    for key, ylabel, fname in (
        ("step_ms", "ms per training step", "time_vs_size.png"),
        ("peak_mb", "peak MB per training step", "memory_vs_size.png"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for rank in dict.fromkeys(r["rank"] for r in res["rows"]):
            pts = [
                (r["size"], r[key]["median"] if key == "step_ms" else r[key])
                for r in res["rows"]
                if r["rank"] == rank and r["status"] == "ok" and r.get(key) is not None
            ]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=_rank_name(rank))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(res["size_name"])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{res['family']}: {json.dumps(res['config']['settings'])}", fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = out / fname
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
        plt.close(fig)
        paths.append(str(path))
    return paths


def write_structured(res: dict, out_dir: str, *, plots: bool = True) -> list[str]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("results.json", json.dumps(res, indent=2)), ("results.md", format_structured(res))):
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text))
        paths.append(str(out / name))
    return paths + (_plot(res, out) if plots else [])
