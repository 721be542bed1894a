"""Speed ratios to exact attention, measured in alternation: ``longseq bench ratios``.

``longseq bench speed`` times every configuration once, one mixer after another: on a shared
machine whose speed drifts over minutes (other tenants, memory bandwidth), a mixer and the
baseline it is compared with can be timed in different phases. Here the baseline and each mixer
are timed in alternation, ``rounds`` times, each time in a fresh worker (the same worker as
``bench speed``): round ``r`` times the baseline, then every mixer, and each mixer's ratio in that
round is the baseline's median over its own median. The report gives, per mixer, the median of
the per-round ratios and their range, the medians of the times, and one exact-heap peak-memory
measurement of each (memory does not drift).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..utils.io import atomic_write
from .speed import SpeedConfig, _base_job, _job_timeout, machine_info, mixer_targets, run_job

__all__ = ["RatioConfig", "run_ratios", "format_ratios", "write_ratios"]


@dataclass
class RatioConfig(SpeedConfig):
    """:class:`~longseq.bench.speed.SpeedConfig` with one length and ``rounds`` alternations."""

    rounds: int = 5

    def __post_init__(self):
        super().__post_init__()
        if len(self.lengths) != 1:
            raise ValueError(f"bench ratios takes one length, got {self.lengths}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"rounds must be a positive int, got {self.rounds!r}")


def _time_ms(row: dict, backward: bool) -> float | None:
    key = "fwdbwd_ms" if backward else "fwd_ms"
    return row[key]["median"] if row.get("status") == "ok" and key in row else None


def run_ratios(
    mixer_names: list[str],
    config: RatioConfig | None = None,
    *,
    baseline: str = "softmax",
    options: dict | None = None,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Alternate ``baseline`` and ``mixer_names`` for ``config.rounds`` rounds (see the module)."""
    cfg = config or RatioConfig(lengths=[16384])
    names = [n for n in dict.fromkeys(mixer_names) if n != baseline]
    if not names:
        raise ValueError("bench ratios needs at least one mixer besides the baseline")
    targets = mixer_targets([baseline, *names], cfg.causal, options)
    skipped = [t for t in targets if t.skip_reason]
    if skipped:
        raise ValueError("; ".join(f"{t.name}: {t.skip_reason}" for t in skipped))
    device, L = cfg.resolved_device(), cfg.lengths[0]
    base = _base_job(cfg, device) | {"kind": "module", "source": "mixer", "L": L}
    times: dict[str, list[float | None]] = {t.name: [] for t in targets}
    for r in range(cfg.rounds):
        for t in targets:
            row = run_job(
                base | {"name": t.name, "options": t.options, "measure": "time"}, _job_timeout(cfg), cfg.isolate
            )
            times[t.name].append(_time_ms(row, cfg.backward))
            if log:
                ms = times[t.name][-1]
                log(
                    f"  round {r + 1}/{cfg.rounds}  {t.name:14s} "
                    + (f"{ms:10.1f} ms" if ms is not None else f"failed: {row.get('error', row.get('status'))}")
                )
    rows = []
    for t in targets:
        mem = run_job(
            base | {"name": t.name, "options": t.options, "measure": "memory"}, _job_timeout(cfg), cfg.isolate
        )
        peak = mem.get("peak_fwdbwd_mb" if cfg.backward else "peak_fwd_mb") if mem.get("status") == "ok" else None
        ok = [ms for ms in times[t.name] if ms is not None]
        ratios = [b / m for b, m in zip(times[baseline], times[t.name]) if b is not None and m is not None]
        rows.append(
            {
                "name": t.name,
                "times_ms": times[t.name],
                "median_ms": statistics.median(ok) if ok else None,
                "ratios": ratios,
                "ratio_median": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios, default=None),
                "ratio_max": max(ratios, default=None),
                "peak_mb": peak,
                "memory_method": mem.get("memory_method"),
            }
        )
    return {
        "kind": "ratios",
        "baseline": baseline,
        "L": L,
        "rounds": cfg.rounds,
        "causal": cfg.causal,
        "backward": cfg.backward,
        "config": base,
        "machine": machine_info(device, cfg.threads),
        "rows": rows,
    }


def format_ratios(res: dict) -> str:
    """Markdown: per mixer, the median and range of the per-round speed-ups over the baseline."""
    base = next(r for r in res["rows"] if r["name"] == res["baseline"])
    what = "fwd+bwd" if res["backward"] else "fwd"
    mode = "causal" if res["causal"] else "bidirectional"
    c, m = res["config"], res["machine"]
    lines = [
        f"# longseq bench ratios: speed-up over `{res['baseline']}` at L = {res['L']}, {mode}",
        "",
        f"{mode}, {what}, batch {c['batch']}, d_model {c['d_model']}, {c['heads']} heads, {c['dtype']}, "
        f"device {c['device']}, {m.get('torch_threads')} torch threads, torch {m.get('torch')}; {res['rounds']} rounds "
        f"of `{res['baseline']}` then each mixer, every timing in a fresh worker ({c['repeats']} timed runs "
        f"after {c['warmup']} warm-up, median); peak memory: one exact-heap worker each.",
        "",
        "Speed-up = the baseline's time over the mixer's time in the same round.",
        "",
        f"| mixer | speed-up (median) | range over rounds | {what} ms (median) | peak MB | memory vs "
        f"`{res['baseline']}` |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        sp = "–" if r["ratio_median"] is None else f"{r['ratio_median']:.2f}x"
        rng = "–" if r["ratio_min"] is None else f"{r['ratio_min']:.2f}x – {r['ratio_max']:.2f}x"
        mem = "–" if r["peak_mb"] is None or not base["peak_mb"] else f"{r['peak_mb'] / base['peak_mb']:.2f}"
        ms = "–" if r["median_ms"] is None else f"{r['median_ms']:.1f}"
        pk = "–" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        lines.append(f"| `{r['name']}` | {sp} | {rng} | {ms} | {pk} | {mem} |")
    return "\n".join(lines) + "\n"


def write_ratios(res: dict, out_dir: str) -> list[str]:
    """``results.json`` and ``results.md`` in ``out_dir`` (each written atomically)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, text in (("results.json", json.dumps(res, indent=1)), ("results.md", format_ratios(res))):
        path = Path(out_dir) / name
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
        paths.append(str(path))
    return paths
