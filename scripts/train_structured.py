"""Grammar induction on the synthetic treebanks: train a neural PCFG or LCFRS-2 by maximum
likelihood (Adam on -log p(x)), then parse the test split (MBR) and score unlabeled F1.

    PYTHONPATH=src python scripts/train_structured.py --task pcfg_synth --model pcfg --seed 0 \
        --steps 400 --out benchmarks/structured_runs/pcfg_seed0.json

Optimiser as Kim et al. 2019 (Adam, betas (0.75, 0.999), gradient norm clipped at 3) but batch 32
and lr 2e-3 instead of batch 4 / 1e-3, to fit CPU minutes. ``--curriculum N``: a length
curriculum in the spirit of Kim et al.'s (they start at length 30 and add 1 per epoch; we start
at N words and reach the longest sentences halfway through training). The project
trainer (longseq.train) is built for classification/LM losses over mixer models, so this small
loop is used instead.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from longseq import trees as T
from longseq.utils.io import atomic_write
from longseq.structured import LCFRS2, PCFG
from longseq.tasks import build


def evaluate(model, split, batch_size=50, discontinuous=False):
    preds, golds, ns, ll_sum, words = [], [], [], 0.0, 0
    for s in range(0, len(split), batch_size):
        idx = torch.arange(s, min(s + batch_size, len(split)))
        b = split.batch(idx)
        with torch.no_grad():
            ll_sum += float(model.log_likelihood(b["inputs"], b["lengths"]).sum())
        words += int(b["lengths"].sum())
        preds += model.parse(b["inputs"], b["lengths"])
        golds += split.trees(idx)
        ns += [int(n) for n in b["lengths"]]
    out = {"sentence_f1": T.corpus_f1(preds, golds, ns)["sentence_f1"],
           "corpus_f1": T.corpus_f1(preds, golds, ns)["corpus_f1"],
           "perplexity": math.exp(-ll_sum / words)}
    if discontinuous:
        out["discontinuous"] = T.corpus_f1(preds, golds, ns, only_discontinuous=True)
        # corpus-level discontinuous F1 is the headline (a sentence with no discontinuous
        # constituent in gold and prediction counts 1 in the sentence-level mean)
        out["predicted_discontinuous"] = sum(len(c) > 1 for p in preds for c in p)
        out["gold_discontinuous"] = sum(len(c) > 1 for g in golds for c in g)
        out["correct_discontinuous"] = sum(len({c for c in T.nontrivial(p, n) if len(c) > 1}
                                               & {c for c in T.nontrivial(g, n) if len(c) > 1})
                                           for p, g, n in zip(preds, golds, ns))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="pcfg_synth", choices=["pcfg_synth", "lcfrs_synth"])
    ap.add_argument("--model", default="pcfg", choices=["pcfg", "lcfrs"])
    ap.add_argument("--nt", type=int, default=30)
    ap.add_argument("--pt", type=int, default=60)
    ap.add_argument("--nd", type=int, default=16, help="discontinuous nonterminals (lcfrs)")
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--curriculum", type=int, default=0,
                    help="length curriculum: train on sentences of length <= this at first, the cap rising "
                         "linearly to the longest over the first half of training (0: off)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    task = build(args.task, seed=0)
    V, Lmax = task.meta.vocab_size, task.meta.seq_len
    if args.model == "pcfg":
        model = PCFG(args.nt, args.pt, V, rank=args.rank, max_length=Lmax)
    else:
        model = LCFRS2(args.nt, args.nd, args.pt, V, rank=args.rank or 32, max_length=Lmax)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.75, 0.999))
    g = torch.Generator().manual_seed(args.seed)
    disc = args.task == "lcfrs_synth"
    log, t0 = [], time.time()
    train_len = task.train.lengths.long()
    for step in range(1, args.steps + 1):
        pool = torch.arange(len(task.train))
        if args.curriculum:
            cap = args.curriculum + (Lmax - args.curriculum) * min(1.0, 2 * step / args.steps)
            pool = pool[train_len <= cap]
        idx = pool[torch.randint(0, len(pool), (args.batch,), generator=g)]
        b = task.train.batch(idx)
        loss = -model.log_likelihood(b["inputs"], b["lengths"]).sum() / b["lengths"].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} nll/word {float(loss.detach()):.3f} {time.time() - t0:.0f}s", flush=True)
        if args.eval_every and step % args.eval_every == 0:
            ev = evaluate(model, task.validation, discontinuous=disc)
            log.append({"step": step, **{k: v for k, v in ev.items() if k != "discontinuous"}})
            print(log[-1], flush=True)
    train_s = time.time() - t0
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "train_seconds": round(train_s, 1), "test": evaluate(model, task.test, discontinuous=disc),
              "baselines": task.meta.extra["baselines"]["test"], "log": log}
    print(json.dumps(result["test"]), json.dumps(result["baselines"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, lambda p: Path(p).write_text(json.dumps(result, indent=1) + "\n"))
    return result


if __name__ == "__main__":
    main()
