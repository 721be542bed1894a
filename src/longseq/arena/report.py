"""The arena's leaderboard, rebuilt from the run dirs alone: ``leaderboard.json``,
``leaderboard.md`` and ``report.html`` (a static single-file page: tables, training curves and
the speed/memory plots embedded as base64 PNGs; plots need matplotlib, the tables do not).

Scores are test-split metrics: accuracy in % (higher is better) or bits per byte (``bpb``, lower
is better). Published numbers (:mod:`longseq.arena.published`) stand beside ours as
``[pub X]`` where a published row maps to the mixer; most longseq tasks are offline stand-ins
for those benchmarks, so they are context, not targets.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from pathlib import Path
from typing import Any

from ..bench import table_rows
from .published import load_published, published_score
from .records import RUN_RECORD, SCHEMA, read_json, write_json

__all__ = ["collect", "write_report", "format_markdown", "format_html"]


# ---------------------------------------------------------------------------- collect
def _ordered(preferred: list[str] | None, found: set[str]) -> list[str]:
    pref = [n for n in (preferred or []) if n in found]
    return pref + sorted(found - set(pref))


def _curve(path: Path, metric: str) -> list[list[float]]:
    """``[[step, value], ...]`` of the validation records of a run's metrics.jsonl."""
    pts = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return pts
    for ln in lines:
        try:
            r = json.loads(ln)
        except ValueError:
            continue
        if r.get("split") == "validation":
            v = r.get(metric, r.get("accuracy"))
            if v is not None:
                pts.append([r["step"], _score(v, metric)])
    return pts


def _score(v: float, metric: str) -> float:
    """Display units: accuracy in %, bpb as is."""
    return 100.0 * v if metric == "accuracy" else float(v)


def _run_entry(d: Path) -> tuple[dict[str, Any], dict]:
    """(leaderboard entry, task info) of one run dir."""
    rec = read_json(d / RUN_RECORD) or {}
    final = read_json(d / "final.json")
    info = rec.get("task_info") or {"name": d.parent.name}
    metric = info.get("metric", "accuracy")
    status = rec.get("status", "unknown")
    if final is not None:
        status = "done"
    elif status in ("running", "done"):
        status = "unfinished"  # interrupted: ``--resume`` continues it
    e = {"task": d.parent.name, "mixer": d.name, "status": status, "metric": metric}
    for k in ("reason", "error", "budget", "overrides", "train_s", "num_parameters"):
        if rec.get(k) is not None:
            e[k] = rec[k]
    if final is not None:
        test, val = final.get("test", {}), final.get("validation", {})
        e["test"], e["validation"] = test, val
        e["score"] = _score(test.get(metric, test.get("accuracy", math.nan)), metric)
        e["validation_score"] = _score(val.get(metric, val.get("accuracy", math.nan)), metric)
        e["steps"] = final.get("steps")
        e["num_parameters"] = final.get("num_parameters", e.get("num_parameters"))
    e["curve"] = _curve(d / "metrics.jsonl", metric)
    return e, info


def collect(out: str | Path) -> dict[str, Any]:
    """The leaderboard dict (what ``leaderboard.json`` holds) from ``out``'s run dirs."""
    out = Path(out)
    settings = read_json(out / "arena.json") or {}
    runs, infos = [], {}
    root = out / "runs"
    if root.is_dir():
        for tdir in sorted(p for p in root.iterdir() if p.is_dir()):
            for mdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
                if (mdir / RUN_RECORD).exists() or (mdir / "final.json").exists():
                    e, info = _run_entry(mdir)
                    runs.append(e)
                    if info.get("metric") or tdir.name not in infos:
                        infos[tdir.name] = {**infos.get(tdir.name, {}), **info}
    task_names = _ordered(settings.get("tasks"), {r["task"] for r in runs})
    mixer_names = _ordered(settings.get("mixers"), {r["mixer"] for r in runs})
    tasks = [{"name": t, "metric": "accuracy", **infos.get(t, {})} for t in task_names]
    order = {(t, m): (i, j) for i, t in enumerate(task_names) for j, m in enumerate(mixer_names)}
    runs.sort(key=lambda r: order[(r["task"], r["mixer"])])
    published = load_published()
    speed = read_json(out / "speed" / "results.json")
    return {
        "schema": SCHEMA + "/leaderboard",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": settings,
        "tasks": tasks,
        "mixers": mixer_names,
        "runs": runs,
        "averages": _averages(runs, tasks, mixer_names),
        "published": {
            "note": published["note"],
            "sources": published["sources"],
            "tasks": {t: published["tasks"][t] for t in task_names if t in published["tasks"]},
            "models": [m for m in published["models"] if any(t in m["results"] for t in task_names)],
        },
        "speed": _speed_summary(speed) if speed else None,
    }


def _averages(runs, tasks, mixers) -> dict[str, dict]:
    """Mean test accuracy (%) per mixer over the accuracy tasks it finished, with the count."""
    acc_tasks = [t["name"] for t in tasks if t.get("metric", "accuracy") == "accuracy"]
    out = {}
    for m in mixers:
        vals = [r["score"] for r in runs if r["mixer"] == m and r["task"] in acc_tasks and "score" in r]
        out[m] = {"mean": sum(vals) / len(vals) if vals else None, "n": len(vals), "of": len(acc_tasks)}
    return out


def _speed_summary(res: dict) -> dict:

    header, rows = table_rows(res)
    return {"config": res.get("config"), "machine": res.get("machine"), "header": header, "rows": rows}


# ---------------------------------------------------------------------------- cells
def _index(lb) -> dict[tuple[str, str], dict]:
    return {(r["task"], r["mixer"]): r for r in lb["runs"]}


def _fmt_score(v: float | None, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.1f}" if metric == "accuracy" else f"{v:.3f}"


def _best(lb) -> dict[str, set[str]]:
    """The best mixers per task (highest accuracy, lowest bpb; ties all count)."""
    best = {}
    for t in lb["tasks"]:
        done = [r for r in lb["runs"] if r["task"] == t["name"] and "score" in r and not math.isnan(r["score"])]
        if done:
            top = (min if t.get("metric") == "bpb" else max)(r["score"] for r in done)
            best[t["name"]] = {r["mixer"] for r in done if r["score"] == top}
    return best


def _cell(r: dict | None, task: dict, published: list[dict], mixer: str) -> tuple[str, str]:
    """(our text, published text) of one leaderboard cell."""
    pub = published_score(published, mixer, task["name"])
    pub_txt = "" if pub is None else (f"pub {pub:.1f}" if isinstance(pub, (int, float)) else f"pub {pub}")
    if r is None:
        return "not run", pub_txt
    st = r["status"]
    if st == "done":
        return _fmt_score(r.get("score"), task.get("metric", "accuracy")), pub_txt
    if st == "n/a":
        return f"n/a ({r.get('reason', '')})", pub_txt
    if st == "error":
        return "error", pub_txt
    return st, pub_txt


def _params_cell(r: dict | None) -> str:
    if r is None or r.get("num_parameters") is None:
        return "-"
    b = r.get("budget")
    txt = f"{r['num_parameters']:,}"
    if b:
        txt += (
            f" ({b['ratio']:.2f}x"
            + ("" if b["adjustment"] == "none" else f"; {b['adjustment']}")
            + ("" if b.get("within", True) else "; OUTSIDE budget")
            + ")"
        )
    return txt


def _settings_line(lb) -> str:
    s = lb["settings"]
    if not s:
        return "settings: (no arena.json; rebuilt from run dirs)"
    bits = [f"preset `{s.get('preset')}` (task preset `{s.get('task_preset')}`)", f"seed {s.get('seed')}"]
    if s.get("steps"):
        bits.append(f"steps overridden to {s['steps']}")
    for k in ("task_options", "model_options", "train_options", "mixer_options"):
        if s.get(k):
            bits.append(f"{k.replace('_', ' ')} `{json.dumps(s[k])}`")
    if s.get("wall_s") is not None:
        bits.append(f"wall time {s['wall_s']:.0f} s")
    return "; ".join(bits)


def _metric_name(t: dict) -> str:
    return "bpb ↓" if t.get("metric") == "bpb" else "acc % ↑"


# ---------------------------------------------------------------------------- markdown
def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"] + [
        "| " + " | ".join(esc(c) for c in r) + " |" for r in rows
    ]


def format_markdown(lb: dict) -> str:
    idx, best, pubs = _index(lb), _best(lb), lb["published"]["models"]
    tasks = lb["tasks"]
    lines = [
        "# longseq arena leaderboard",
        "",
        _settings_line(lb),
        "",
        "Test-split scores; every mixer's model is matched to the softmax model's parameter count "
        "(within the tolerance, see *Parameters*). **Bold** = best per task. `[pub X]` = the published "
        "number of the corresponding model (reference only, see *Published*).",
        "",
    ]
    header = ["mixer"] + [f"{t['name']} ({_metric_name(t)})" for t in tasks] + ["avg acc %"]
    rows = []
    for m in lb["mixers"]:
        row = [f"`{m}`"]
        for t in tasks:
            ours, pub = _cell(idx.get((t["name"], m)), t, pubs, m)
            if m in best.get(t["name"], ()):
                ours = f"**{ours}**"
            row.append(ours + (f" [{pub}]" if pub else ""))
        a = lb["averages"][m]
        row.append("-" if a["mean"] is None else f"{a['mean']:.1f} ({a['n']}/{a['of']})")
        rows.append(row)
    lines += _md_table(header, rows)

    lines += ["", "## Parameters", "", "Parameter count (ratio to softmax; adjustment made by the budget search).", ""]
    lines += _md_table(
        ["mixer"] + [t["name"] for t in tasks],
        [[f"`{m}`"] + [_params_cell(idx.get((t["name"], m))) for t in tasks] for m in lb["mixers"]],
    )
    lines += ["", "## Training time (s)", ""]
    lines += _md_table(
        ["mixer"] + [t["name"] for t in tasks],
        [[f"`{m}`"] + [_time_cell(idx.get((t["name"], m))) for t in tasks] for m in lb["mixers"]],
    )

    problems = [r for r in lb["runs"] if r["status"] in ("error", "unfinished", "running")]
    if problems:
        lines += ["", "## Errors and unfinished runs", ""]
        lines += [
            f"- `{r['task']}/{r['mixer']}`: {r['status']}" + (f": {r['error']}" if r.get("error") else "")
            for r in problems
        ]
    lines += ["", "## Tasks", ""]
    lines += _md_table(
        ["task", "kind", "metric", "length", "preset", "description"],
        [
            [
                t["name"],
                t.get("kind", "?"),
                t.get("metric", "?"),
                str(t.get("seq_len", "?")),
                str(t.get("preset", "?")),
                t.get("description", ""),
            ]
            for t in tasks
        ],
    )
    lines += ["", *_md_published(lb)]
    if lb.get("speed"):
        sp = lb["speed"]
        c = sp["config"] or {}
        lines += [
            "",
            "## Speed and memory",
            "",
            f"`longseq bench speed`: d_model {c.get('d_model')}, {c.get('heads')} heads, batch {c.get('batch')}, "
            f"{'causal' if c.get('causal') else 'bidirectional'}, {c.get('dtype')}; plots in `speed/`.",
            "",
        ]
        lines += _md_table(sp["header"], sp["rows"])
    return "\n".join(lines) + "\n"


def _time_cell(r):
    if not r or r.get("train_s") is None:
        return "-"
    return f"{r['train_s']:.1f}" if r["train_s"] < 10 else f"{r['train_s']:.0f}"


def _published_table(lb) -> tuple[list[str], list[list[str]]]:
    p = lb["published"]
    cols = [t["name"] for t in lb["tasks"] if t["name"] in p["tasks"]]
    rows = []
    for m in p["models"]:
        cells = [m["results"].get(c) for c in cols]
        if all(c is None for c in cells):
            continue
        rows.append(
            [m["model"], f"`{m['mixer']}`" if m.get("mixer") else "-"]
            + ["-" if c is None else (f"{c:.2f}" if isinstance(c, (int, float)) else str(c)) for c in cells]
            + [m.get("source") or "-"]
        )
    return ["model", "longseq mixer"] + cols + ["source"], rows


def _md_published(lb) -> list[str]:
    header, rows = _published_table(lb)
    if not rows:
        return []
    p = lb["published"]
    lines = ["## Published", "", p["note"], ""] + _md_table(header, rows) + [""]
    lines += [f"- {t}: {v['benchmark']}; {v['note']}" for t, v in p["tasks"].items()]
    lines += [f"- `{k}`: {v}" for k, v in p["sources"].items()]
    return lines


# ---------------------------------------------------------------------------- html
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_curves(lb: dict, path: Path | None = None) -> str | None:
    """Validation metric vs step, one panel per task, one line per mixer: base64 PNG (None
    without matplotlib or curves). Also saved to ``path`` when given."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    tasks = [t for t in lb["tasks"] if any(r["curve"] for r in lb["runs"] if r["task"] == t["name"])]
    if not tasks:
        return None
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, t in zip(axes.flat, tasks):
        for m in lb["mixers"]:
            r = next((r for r in lb["runs"] if r["task"] == t["name"] and r["mixer"] == m), None)
            if r and r["curve"]:
                xs, ys = zip(*r["curve"])
                ax.plot(xs, ys, marker="o", ms=3, label=m)
        ax.set_title(t["name"])
        ax.set_xlabel("step")
        ax.set_ylabel("validation " + ("accuracy (%)" if t.get("metric") != "bpb" else "bits per byte"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return data


def _html_table(header, rows, raw_cols=()) -> str:
    e = html.escape
    th = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if i in raw_cols else e(str(c))}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(b64: str | None, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


def _file_b64(path: Path) -> str | None:
    try:
        return base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f3f3f3}td.best{font-weight:bold;background:#e8f5e9}.pub{color:#777;font-size:0.85em}
.na{color:#999}.err{color:#b00}img{max-width:100%}code{background:#f6f6f6;padding:0 3px}"""


def format_html(lb: dict, out: Path | None = None) -> str:
    """The single-file report page (images embedded)."""
    e = html.escape
    idx, best, pubs = _index(lb), _best(lb), lb["published"]["models"]
    tasks = lb["tasks"]
    head = (
        "<tr><th>mixer</th>"
        + "".join(f"<th>{e(t['name'])}<br><small>{e(_metric_name(t))}</small></th>" for t in tasks)
        + "<th>avg acc %</th></tr>"
    )
    body = []
    for m in lb["mixers"]:
        cells = [f"<td><code>{e(m)}</code></td>"]
        for t in tasks:
            r = idx.get((t["name"], m))
            ours, pub = _cell(r, t, pubs, m)
            cls = (
                "best"
                if m in best.get(t["name"], ())
                else ("na" if ours.startswith("n/a") else "err" if ours == "error" else "")
            )
            title = e(r.get("error", ""), quote=True) if r else ""
            cells.append(
                f'<td class="{cls}" title="{title}">{e(ours)}'
                + (f' <span class="pub">[{e(pub)}]</span>' if pub else "")
                + "</td>"
            )
        a = lb["averages"][m]
        cells.append("<td>" + ("-" if a["mean"] is None else f"{a['mean']:.1f} ({a['n']}/{a['of']})") + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>longseq arena</title><style>{CSS}</style>"
        "</head><body>",
        "<h1>longseq arena leaderboard</h1>",
        f"<p>{e(_settings_line(lb))}</p>",
        "<p>Test-split scores; every model is matched to the softmax model's parameter count. Bold = best per "
        "task; grey [pub X] = published number of the corresponding model (reference only).</p>",
        f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>",
    ]
    curves = plot_curves(lb, out / "curves.png" if out else None)
    parts += [
        "<h2>Training curves</h2>",
        _img(curves, "validation metric vs step") or "<p>(no curves: matplotlib missing or no evaluations)</p>",
    ]
    parts += [
        "<h2>Parameters</h2><p>Count (ratio to softmax; adjustment of the budget search).</p>",
        _html_table(
            ["mixer"] + [t["name"] for t in tasks],
            [[m] + [_params_cell(idx.get((t["name"], m))) for t in tasks] for m in lb["mixers"]],
        ),
        "<h2>Training time (s)</h2>",
        _html_table(
            ["mixer"] + [t["name"] for t in tasks],
            [[m] + [_time_cell(idx.get((t["name"], m))) for t in tasks] for m in lb["mixers"]],
        ),
    ]
    problems = [r for r in lb["runs"] if r["status"] in ("error", "unfinished", "running")]
    if problems:
        parts.append(
            "<h2>Errors and unfinished runs</h2><ul>"
            + "".join(
                f"<li><code>{e(r['task'])}/{e(r['mixer'])}</code>: {e(r['status'])}"
                + (f": {e(r['error'])}" if r.get("error") else "")
                + "</li>"
                for r in problems
            )
            + "</ul>"
        )
    if lb.get("speed"):
        sp = lb["speed"]
        c = sp["config"] or {}
        parts += [
            "<h2>Speed and memory</h2>",
            f"<p>longseq bench speed: d_model {c.get('d_model')}, {c.get('heads')} heads, batch {c.get('batch')}, "
            f"{'causal' if c.get('causal') else 'bidirectional'}, {e(str(c.get('dtype')))}.</p>",
            _html_table(sp["header"], sp["rows"]),
        ]
        if out is not None:
            parts += [
                _img(_file_b64(out / "speed" / "speed.png"), "time vs length"),
                _img(_file_b64(out / "speed" / "memory.png"), "memory vs length"),
            ]
    parts += [
        "<h2>Tasks</h2>",
        _html_table(
            ["task", "kind", "metric", "length", "preset", "description"],
            [
                [
                    t["name"],
                    t.get("kind", "?"),
                    t.get("metric", "?"),
                    t.get("seq_len", "?"),
                    t.get("preset", "?"),
                    t.get("description", ""),
                ]
                for t in tasks
            ],
        ),
    ]
    header, rows = _published_table(lb)
    if rows:
        p = lb["published"]
        parts += [
            "<h2>Published</h2>",
            f"<p>{e(p['note'])}</p>",
            _html_table(header, rows),
            "<ul>"
            + "".join(f"<li>{e(t)}: {e(v['benchmark'])}; {e(v['note'])}</li>" for t, v in p["tasks"].items())
            + "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in p["sources"].items())
            + "</ul>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- files
def write_report(out: str | Path) -> dict[str, Any]:
    """Write ``leaderboard.json``, ``leaderboard.md`` and ``report.html`` (and ``curves.png``)
    into ``out`` from its run dirs; return the leaderboard dict."""
    out = Path(out)
    lb = collect(out)
    write_json(out / "leaderboard.json", lb)
    (out / "leaderboard.md").write_text(format_markdown(lb))
    (out / "report.html").write_text(format_html(lb, out))
    return lb
