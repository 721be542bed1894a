"""The CLI end to end on a tiny run: list, train, info, and user errors."""

import json

from longseq.cli import main


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "softmax" in out and "O(N^2)" in out
    assert main(["list", "--tasks"]) == 0
    assert "mqar" in capsys.readouterr().out


def test_train_then_info(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--task",
        "mqar",
        "--mixer",
        "softmax",
        "--task-option",
        "n_train=64",
        "--task-option",
        "n_val=8",
        "--task-option",
        "n_test=8",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--d-model",
        "16",
        "--eval-every",
        "2",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "test: accuracy" in capsys.readouterr().out
    for f in ("config.json", "metrics.jsonl", "checkpoint.pt", "final.json", "model/model.safetensors"):
        assert (out / f).exists(), f
    assert main(["info", str(out)]) == 0
    assert "final test" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final"]["steps"] == 4
    # resume after completion continues nothing and still reports
    assert main(args + ["--resume"]) == 0


def test_user_errors_are_messages(capsys):
    assert main(["train", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["train", "--task", "mqar", "--mixer", "nope"]) == 2
    assert "unknown mixer" in capsys.readouterr().err
    assert main(["info", "/nonexistent"]) == 2
