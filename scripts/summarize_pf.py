"""Combine the per-mixer/per-seed outputs of scripts/pretrain_finetune_reduced.sh into one table.

Usage: python scripts/summarize_pf.py runs/pf_reduced > table.md
Reads every OUT/*/pretrain_finetune.json (one mixer and seed each) and prints the MLM results
(test masked-token accuracy, bits per masked byte, the validation masked-bpb curve) and the
retrieval test accuracy fine-tuned vs from scratch, per seed and mean.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path


def main(root: str) -> None:
    pre, res, curves = defaultdict(dict), defaultdict(dict), defaultdict(dict)
    settings = None
    for f in sorted(Path(root).glob("*/pretrain_finetune.json")):
        lb = json.loads(f.read_text())
        settings = settings or lb["settings"]
        for m, per in lb["pretrain"].items():
            for s, v in per.items():
                pre[m][s] = v
                curves[m][s] = v["curve"]
        for r in lb["results"]:
            for s in r["finetune"]:
                res[(r["task"], r["mixer"])][s] = (r["scratch"][s], r["finetune"][s])
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    if settings:
        print(f"Pre-training {settings['pretrain_task']} {settings['pretrain_steps']} steps; fine-tuning "
              f"{settings['finetune_steps']} steps; from scratch {settings['pretrain_steps'] + settings['finetune_steps']}"
              f" steps; train options {settings['train_options']}; task options {settings['task_options']}.\n")
    print("| mixer | parameters | seeds | MLM masked-token acc % (test) | bits per masked byte (test) |")
    print("|---|---|---|---|---|")
    for m, per in pre.items():
        done = {s: v for s, v in per.items() if v["status"] == "done" and v["masked_bpb"] is not None}
        n = next((v["num_parameters"] for v in done.values()), None)
        b = next((v.get("budget") for v in done.values() if v.get("budget")), None)
        if b:
            n = f"{n} ({b['ratio']:.2f} x softmax{'' if b['within'] else ', outside the 10% budget'})"
        acc = ", ".join(pct(v["masked_accuracy"]) for v in done.values())
        bpb = ", ".join(f"{v['masked_bpb']:.3f}" for v in done.values())
        print(f"| {m} | {n} | {','.join(done)} | {acc} | {bpb} |")
    print("\n| task | mixer | from scratch % (per seed) | fine-tuned % (per seed) | mean difference |")
    print("|---|---|---|---|---|")
    for (t, m), per in res.items():
        sc = [v[0] for v in per.values() if v[0] is not None]
        ft = [v[1] for v in per.values() if v[1] is not None]
        d = None if not sc or not ft else mean(ft) - mean(sc)
        print(f"| {t} | {m} | {pct(mean(sc))} ({', '.join(pct(v[0]) for v in per.values())}) | {pct(mean(ft))} "
              f"({', '.join(pct(v[1]) for v in per.values())}) | {'—' if d is None else f'{100 * d:+.1f}'} |")
    print("\nValidation bits per masked byte during pre-training (step: value):\n")
    for m, per in curves.items():
        for s, c in per.items():
            print(f"- {m} seed {s}: " + ", ".join(f"{int(a)}: {b:.2f}" for a, b in c))


if __name__ == "__main__":
    main(sys.argv[1])
