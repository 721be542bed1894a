"""Benchmark results as files: ``results.json``, ``results.md`` (the table) and log-log plots."""

from __future__ import annotations

import json
import os

__all__ = ["format_table", "format_markdown", "write_report", "plot"]


def _fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def _ms(t: dict | None) -> str:
    """``median ±spread%`` where the spread is the interquartile range relative to the median."""
    if not t:
        return "-"
    if t["n"] < 2 or t["median"] <= 0:
        return f"{t['median']:.2f}"
    return f"{t['median']:.2f} ±{100 * (t['q75'] - t['q25']) / t['median']:.0f}%"


def _status(r: dict) -> str:
    if r["status"] != "ok":
        return r["status"]
    notes = (["non-finite output"] if r.get("finite") is False else []) + (["over budget"] if r.get("reason") else [])
    return ", ".join(notes)


def _generate_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    header = [
        "mixer",
        "prompt",
        "new",
        "prefill ms",
        "decode tok/s",
        "ms/step",
        "first 10% ms",
        "last 10% ms",
        "peak MB",
        "note",
    ]
    rows = []
    for r in res["rows"]:
        step = r.get("step_ms") or {}
        rows.append(
            [
                r["name"],
                str(r["prompt"]),
                str(r["new"]),
                _fmt(r.get("prefill_ms")),
                _fmt(r.get("tokens_per_s")),
                _fmt(step.get("median"), ".2f"),
                _fmt(r.get("step_ms_first_tenth"), ".2f"),
                _fmt(r.get("step_ms_last_tenth"), ".2f"),
                _fmt(r.get("peak_mb")),
                r["status"] if r["status"] != "ok" else ("prefill only" if r.get("reason") else ""),
            ]
        )
    return header, rows


def table_rows(res: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the results table; skipped lengths are listed separately."""
    if res["kind"] == "generate":
        return _generate_rows(res)
    backward = res["config"]["backward"]
    peers = res["kind"] == "peers"
    header = [
        "method",
        "L",
        "fwd ms",
        "fwd+bwd ms" if backward else None,
        "peak MB",
        "vs twin" if peers else None,
        "vs softmax",
        "GFLOP/s",
        "% matmul",
        "note",
    ]
    keep = [i for i, h in enumerate(header) if h is not None]
    rows = []
    for r in _ordered_rows(res):
        if r["status"] == "skipped":
            continue
        peak = r.get("peak_fwdbwd_mb") if backward else r.get("peak_fwd_mb")
        name = label(r)
        ratio = lambda k: _fmt(r.get(k), ".2f") + ("x" if r.get(k) is not None else "")  # noqa: E731
        cells = [
            name,
            str(r["L"]),
            _ms(r.get("fwd_ms")),
            _ms(r.get("fwdbwd_ms")),
            _fmt(peak),
            ratio("ratio_vs_twin"),
            ratio("ratio_vs_softmax"),
            _fmt(r.get("gflops_fwd")),
            _fmt(r.get("pct_of_matmul_peak"), ".0f"),
            _status(r),
        ]
        rows.append([cells[i] for i in keep])
    return [header[i] for i in keep], rows


def label(r: dict) -> str:
    """Display name: a mixer's name, or ``<package> (peer)``."""
    return r["name"] if r["source"] == "mixer" else f"{r['name']} (peer)"


def _ordered_rows(res: dict) -> list[dict]:
    """Rows by target in run order; for peers, each longseq twin is followed by its peers."""
    order = {(t["source"], t["name"]): i for i, t in enumerate(res["targets"])}

    def key(r):
        own = order[(r["source"], r["name"])]
        anchor = order.get(("mixer", r.get("twin")), own) if r["source"] == "peer" else own
        return (anchor, r["source"] != "mixer", own, r["L"])

    return sorted(res["rows"], key=key)


def format_table(res: dict) -> str:
    """The results as a GitHub-flavoured markdown table (also printed by the CLI)."""
    header, rows = table_rows(res)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _notes(res: dict) -> list[str]:
    notes = []
    for t in res["targets"]:
        if t.get("note"):
            notes.append(f"- `{label(t)}`: {t['note']}")
    for t in res["targets"]:
        if t.get("skip_reason"):
            notes.append(f"- `{label(t)}` skipped: {t['skip_reason']}")
        elif t.get("stopped"):
            notes.append(f"- `{label(t)}` stopped: {t['stopped']}")
    for r in res["rows"]:
        where = f" L={r['L']}" if "L" in r else ""
        if r["status"] not in ("ok", "skipped"):
            notes.append(f"- `{label(r)}`{where}: {r['status']}: {r.get('error', '')}")
        elif res["kind"] == "generate" and r.get("reason"):
            notes.append(f"- `{r['name']}`: {r['reason']}")
    return notes


def _generate_header(res: dict) -> list[str]:
    c, m = res["config"], res["machine"]
    return [
        "# longseq bench generate",
        "",
        f"CausalLM, {c['n_layers']} layers, d_model {c['d_model']}, {c['heads']} heads, vocab {c['vocab_size']}, "
        f"batch {c['batch']}, {c['dtype']}, device {m['device']}, {m['torch_threads']} torch threads, "
        f"torch {m['torch']}, {m['processor']}; greedy decoding, "
        + ("each mixer in a fresh process." if c.get("isolate", True) else "all in one process."),
        "",
        "prefill: one stateful forward over the prompt; decode tok/s: batch x new tokens / decoding time; "
        "ms/step: median; first/last 10%: mean step time over the first/last tenth of the new tokens; "
        "peak MB: extra memory of prefill + decoding.",
        "",
        format_table(res),
    ]


def format_markdown(res: dict) -> str:
    if res["kind"] == "generate":
        lines = _generate_header(res)
        notes = _notes(res)
        return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"
    c, m = res["config"], res["machine"]
    mode = "causal" if c["causal"] else "bidirectional"
    peak = m.get("matmul_fp32_gflops")
    lines = [
        f"# longseq bench {res['kind']}",
        "",
        f"{mode}, batch {c['batch']}, d_model {c['d_model']}, {c['heads']} heads, {c['dtype']}, "
        f"device {m['device']}{' (' + m['device_name'] + ')' if m.get('device_name') else ''}, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, {m['processor']}; "
        f"{c['repeats']} timed repeats after {c['warmup']} warm-up, "
        + (
            "each configuration in a fresh process (peak memory in a second one with an exact heap)."
            if c.get("isolate", True)
            else "all in one process (--no-isolate: peak memory depends on earlier runs)."
        ),
        f"fp32 matmul peak measured in this run: {_fmt(peak)} GFLOP/s.",
        "",
        "Times: median ±(interquartile range / median). Peak MB: extra memory of one "
        + ("forward+backward" if c["backward"] else "forward")
        + " call. Ratios: time over the "
        + ("twin's (the longseq mixer the peer implements) and over " if res["kind"] == "peers" else "")
        + "`softmax`'s time at the same length (< 1 = faster). GFLOP/s: analytic forward FLOPs / forward time;"
        " % matmul: of the fp32 matmul peak.",
        "",
        format_table(res),
    ]
    notes = _notes(res)
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot(res: dict, out_dir: str) -> list[str]:
    """``speed.png`` and ``memory.png`` (log-log, one line per target); [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    if res["kind"] == "generate":
        return []
    backward = res["config"]["backward"]
    tkey, mkey = ("fwdbwd_ms", "peak_fwdbwd_mb") if backward else ("fwd_ms", "peak_fwd_mb")
    what = "forward+backward" if backward else "forward"
    written = []
    for fname, ylabel, get in (
        ("speed.png", f"{what} time (ms)", lambda r: (r.get(tkey) or {}).get("median")),
        ("memory.png", f"peak extra memory, {what} (MB)", lambda r: r.get(mkey)),
    ):
        fig, ax = plt.subplots(figsize=(7, 5))
        for t in res["targets"]:
            pts = [
                (r["L"], get(r))
                for r in res["rows"]
                if (r["source"], r["name"]) == (t["source"], t["name"]) and r["status"] == "ok" and get(r)
            ]
            if pts:
                style = "--" if t["source"] == "peer" else "-"
                ax.plot(*zip(*pts), style, marker="o", label=label(t))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        c = res["config"]
        ax.set_title(
            f"longseq bench {res['kind']}: d_model {c['d_model']}, {c['heads']} heads, "
            f"batch {c['batch']}, {'causal' if c['causal'] else 'bidirectional'}"
        )
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        path = os.path.join(out_dir, fname)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def write_report(res: dict, out_dir: str, *, plots: bool = True) -> list[str]:
    """Write ``results.json``, ``results.md`` and (with matplotlib) the plots; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "results.json"), os.path.join(out_dir, "results.md")]
    with open(paths[0], "w") as f:
        json.dump(res, f, indent=1)
    with open(paths[1], "w") as f:
        f.write(format_markdown(res))
    if plots:
        paths += plot(res, out_dir)
    return paths
