"""``longseq info RUN_DIR``: configuration and metrics of a training run; ``longseq info MIXER``: a
registered mixer's spec and the BibTeX entries of its papers (``longseq/papers.bib``)."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "info", help="show the configuration and metrics of a run directory, or a mixer's spec and BibTeX entries"
    )
    p.add_argument("run_dir", metavar="RUN_DIR_OR_MIXER", help="a run directory, or a registered mixer name")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    d = Path(args.run_dir)
    if not d.exists():
        from .. import mixers

        if args.run_dir in mixers.names():
            return _mixer_info(args.run_dir, as_json=args.json)
    if not (d / "config.json").is_file():
        raise FileNotFoundError(
            f"{d} is not a run directory (no config.json)"
            + ("" if d.exists() else " and not a registered mixer name (see `longseq list`)")
        )
    config = json.loads((d / "config.json").read_text())
    final = json.loads((d / "final.json").read_text()) if (d / "final.json").is_file() else None
    evals = []
    if (d / "metrics.jsonl").is_file():
        evals = [
            r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["split"] == "validation"
        ]
    if args.json:
        print(json.dumps({"config": config, "final": final, "validation_history": evals}, indent=2))
        return 0
    t, m, tr = config["task"], config["model"], config["train"]
    print(f"run      {d}")
    print(f"task     {t['name']} (preset {t['preset']}, seed {t['seed']})")
    if "layers" in m or "mixer" in m:
        print(
            f"model    {m.get('class')}: mixer {_mixers(m)}, d_model {m.get('d_model')}, layers {m.get('n_layers')},"
            f" heads {m.get('num_heads')}, position {m.get('position')}"
        )
    else:  # a model without mixers (e.g. the HMM LM): its own settings
        print(f"model    {m.get('class')}: " + ", ".join(f"{k} {v}" for k, v in m.items() if k != "class"))
    print(f"trainer  {tr['steps']} steps, batch {tr['batch_size']}, lr {tr['lr']}, wd {tr['weight_decay']}")
    for r in evals:
        score = "accuracy" if "accuracy" in r else "rel_l2"  # regression tasks report rel_l2
        print(f"  step {r['step']:>6}: validation loss {r['loss']:.4f} {score} {r.get(score, float('nan')):.4f}")
    if final:
        for split in ("validation", "test"):
            print(f"final {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in final[split].items() if k != "count"))
        print(f"parameters {final['num_parameters']:,}")
    else:
        print("(unfinished: no final.json)")
    return 0


def _mixers(model_config: dict) -> str:
    """The layers' mixers with their options (``layers``, ModelConfig schema), or the older ``mixer`` entry."""
    layers = model_config.get("layers")
    if not layers:
        return str(model_config.get("mixer"))
    parts = [
        e["mixer"] + ("(" + ",".join(f"{k}={v}" for k, v in e["options"].items()) + ")" if e.get("options") else "")
        for e in layers
    ]
    return ",".join(parts)


def _mixer_info(name: str, *, as_json: bool) -> int:
    """Print a mixer's spec (its declared capabilities and constructor options) and its BibTeX entries."""
    import inspect

    from .. import mixers, papers

    s = mixers.spec(name)
    options = {
        k: (None if v.default is inspect.Parameter.empty else v.default)
        for k, v in inspect.signature(s.cls.__init__).parameters.items()
        if k not in ("self", "d_model") and v.kind is inspect.Parameter.KEYWORD_ONLY
    }
    keys = papers.keys_for(name)
    if as_json:
        spec = {
            k: getattr(s, k)
            for k in ("name", "family", "paper", "complexity", "causal", "bidirectional", "step", "heads", "has_ffn")
        }
        entries = papers.bib_entries()
        print(
            json.dumps(
                {"spec": spec, "options": options, "bibtex": {k: entries[k]["text"] for k in keys}},
                indent=2,
                default=repr,
            )
        )
        return 0
    modes = "/".join(m for m, ok in (("causal", s.causal), ("bidirectional", s.bidirectional)) if ok)
    print(f"mixer      {s.name} ({s.family}, {s.complexity})")
    print(f"paper      {s.paper}")
    print(f"modes      {modes}; recurrent step: {'yes' if s.step else 'no'}; heads: {'yes' if s.heads else 'no'}")
    print("options    " + ", ".join(f"{k}={v!r}" for k, v in options.items()))
    print(f"bibtex     {', '.join(keys)}")
    print()
    print(papers.bibtex_for(name))
    return 0
