"""logic_inference accuracy by number of operators (issue 21): models trained on <= 6 operators,
tested on 1..12.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/stack/logic_table.py --out benchmarks/stack/logic.jsonl

One JSON line per (model, seed): test accuracy per operator count. Models: SequenceClassifier in
pair mode (two expressions encoded separately, [u, v, u*v, u-v] -> MLP), mean pooling."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from longseq import tasks, trees
from longseq.tasks import logic
from longseq.tasks.base import Split
from longseq.train import TrainConfig, build_model, train
from longseq.train.trainer import evaluate

MODELS = {
    "onlstm": dict(mixer="onlstm", ffn="none", mixer_options={"chunk_size": 4}),
    "structformer": dict(mixer="structformer", mixer_options={"conv_size": 3, "parser_layers": 2}),
    "lstm": dict(mixer="lstm", ffn="none"),
    "softmax": dict(mixer="softmax", position="learned"),
}


def words_and_gold(tokens: list[int]):
    """Positions of the words (variables, operators: brackets dropped) and the word spans of every
    bracketed subexpression."""
    words = [i for i, t in enumerate(tokens) if t not in (logic.LP, logic.RP)]
    index = {p: k for k, p in enumerate(words)}
    stack, spans = [], []
    for i, t in enumerate(tokens):
        if t == logic.LP:
            stack.append(i)
        elif t == logic.RP:
            inner = [index[p] for p in range(stack.pop(), i) if p in index]
            spans.append(((inner[0], inner[-1] + 1),))
    return words, spans


@torch.no_grad()
def parse_f1(model, split: Split, n: int = 300) -> dict:
    """Unlabeled F1 (longseq.trees, sentence-level mean) of the first layer's induced trees on the
    first expression of ``n`` test pairs against their bracketing, brackets removed from the words.
    Token boundary scores: ON-LSTM ``d_{k+1}``, StructFormer ``δ_k``; the score between two
    consecutive words is the largest over the tokens between them (brackets)."""
    mixer = model.backbone.blocks[0].mixer
    seen = {}
    hook = mixer.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0], mask=args[1]))
    ids, mask = split.inputs[:n, 0], split.mask[:n, 0]
    model.eval()
    model.encode(ids, mask)
    hook.remove()
    if hasattr(mixer, "distances_heights"):
        bound = mixer.distances_heights(seen["x"], seen["mask"])[0]                   # δ_k
    else:
        bound = mixer.distances(seen["x"], seen["mask"])[:, 1:]                        # d_{k+1}
    preds, golds, rb, lengths = [], [], [], []
    for b in range(len(ids)):
        toks = ids[b, :int(mask[b].sum())].tolist()
        words, gold = words_and_gold(toks)
        scores = [float(bound[b, p:q].max()) for p, q in zip(words[:-1], words[1:])]
        preds.append(trees.split_by_distance(scores))
        golds.append(gold)
        rb.append(trees.right_branching(len(words)))
        lengths.append(len(words))
    return {"model_f1": round(trees.corpus_f1(preds, golds, lengths)["sentence_f1"], 4),
            "right_branching_f1": round(trees.corpus_f1(rb, golds, lengths)["sentence_f1"], 4)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--n-layers", type=int, default=1)
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--n-test-per-ops", type=int, default=100)
    a = p.parse_args()
    torch.set_num_threads(1)
    for seed in a.seeds:
        task = tasks.build("logic_inference", seed=seed, n_train=a.n_train, n_test_per_ops=a.n_test_per_ops)
        for name in a.models.split(","):
            spec = dict(MODELS[name])
            mixer = spec.pop("mixer")
            torch.manual_seed(seed)
            model = build_model(task, mixer, d_model=a.d_model, n_layers=a.n_layers, num_heads=2, **spec)
            cfg = TrainConfig(steps=a.steps, batch_size=32, lr=2e-3, warmup=50, weight_decay=0.01,
                              eval_every=a.steps, seed=seed, progress=False, threads=1)
            t0 = time.perf_counter()
            final = train(model, task, cfg)
            by_ops = {}
            for k in range(1, int(task.test.n_ops.max()) + 1):
                idx = torch.nonzero(task.test.n_ops == k).squeeze(1)
                sub = Split(task.test.inputs[idx], task.test.targets[idx], task.test.mask[idx])
                by_ops[k] = round(evaluate(model, sub)["accuracy"], 4)
            rec = {"model": name, "seed": seed, "steps": a.steps, "d_model": a.d_model, "n_layers": a.n_layers,
                   "params": final["num_parameters"], "seconds": round(time.perf_counter() - t0, 1),
                   "val_acc": round(final["validation"]["accuracy"], 4), "test_acc_by_ops": by_ops}
            if name in ("onlstm", "structformer"):
                rec["parse"] = parse_f1(model, task.test)
            with open(Path(a.out), "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
