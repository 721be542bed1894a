"""``longseq arena --protocol pretrain-finetune``: a tiny end-to-end run, resume, and the report."""

import json

import pytest
import torch

torch.set_num_threads(1)

TINY = [
    "--task-option",
    "mlm_code.seq_len=32",
    "--task-option",
    "mlm_code.max_eval_bytes=1500",
    "--task-option",
    "mlm_code.train_windows=64",
    "--task-option",
    "retrieval.seq_len=32",
    "--task-option",
    "retrieval.n_train=32",
    "--task-option",
    "retrieval.n_val=8",
    "--task-option",
    "retrieval.n_test=8",
    "--train-option",
    "batch_size=4",
    "--model-option",
    "d_model=16",
    "--model-option",
    "n_layers=1",
]


def test_pretrain_finetune_protocol(tmp_path, capsys):
    from longseq.arena.pretrain import collect_pf
    from longseq.cli import main

    out = tmp_path / "pf"
    argv = [
        "arena",
        "--protocol",
        "pretrain-finetune",
        "--mixers",
        "softmax,grn,h3",
        "--tasks",
        "retrieval",
        "--pretrain-steps",
        "3",
        "--finetune-steps",
        "2",
        "--seeds",
        "0",
        "--layer-lr-decay",
        "0.9",
        "--out",
        str(out),
        *TINY,
    ]
    assert main(argv) == 0
    md = capsys.readouterr().out
    assert "| retrieval | softmax |" in md and "n/a: causal only" in md
    lb = collect_pf(out)
    for m in ("softmax", "grn"):
        pre = lb["pretrain"][m]["0"]
        assert pre["status"] == "done" and 0 <= pre["masked_accuracy"] <= 1 and pre["masked_bpb"] > 0
        assert [s for s, _ in pre["curve"]] == [1, 2, 3]
        ft_cfg = json.loads((out / "runs" / "retrieval" / m / "0" / "finetune" / "config.json").read_text())
        sc_cfg = json.loads((out / "runs" / "retrieval" / m / "0" / "scratch" / "config.json").read_text())
        assert ft_cfg["train"]["steps"] == 2 and sc_cfg["train"]["steps"] == 5  # equal total steps
        assert ft_cfg["model"] == sc_cfg["model"]  # the same architecture
        rep = json.loads((out / "runs" / "retrieval" / m / "0" / "finetune" / "init_report.json").read_text())
        assert "backbone.embed.weight" in rep["loaded"] and "mlm_bias" in rep["skipped"]
    n = {m: lb["pretrain"][m]["0"]["num_parameters"] for m in ("softmax", "grn")}
    assert abs(n["grn"] / n["softmax"] - 1) <= 0.10  # equal parameter budget
    row = next(r for r in lb["results"] if r["mixer"] == "grn")
    assert row["finetune"]["0"] is not None and row["scratch"]["0"] is not None
    # resume: everything finished is skipped, the report is rebuilt identically
    before = (out / "pretrain_finetune.md").read_text()
    assert main(argv + ["--resume"]) == 0
    assert (out / "pretrain_finetune.md").read_text() == before
    assert main(["arena", "--protocol", "pretrain-finetune", "--report-only", "--out", str(out)]) == 0
    # a fresh (non-resumed) run starts from empty run dirs: one record per evaluation, not two
    assert main(argv) == 0
    recs = (out / "pretrain" / "0" / "softmax" / "metrics.jsonl").read_text().splitlines()
    assert sum('"split": "validation"' in r for r in recs) == 3


def test_protocol_rejects_lm_pretrain_task(tmp_path):
    from longseq.arena.pretrain import run_pretrain_finetune

    with pytest.raises(ValueError, match="MLM task"):
        run_pretrain_finetune(
            ["softmax"],
            ["retrieval"],
            tmp_path,
            pretrain_task="lm_code",
            pretrain_steps=1,
            finetune_steps=1,
            task_options={
                "lm_code": {"seq_len": 16, "max_eval_bytes": 500},
                "retrieval": {"seq_len": 16, "n_train": 8, "n_val": 4, "n_test": 4},
            },
        )
    with pytest.raises(ValueError, match="unknown mixer"):
        run_pretrain_finetune(["nope"], ["retrieval"], tmp_path)
