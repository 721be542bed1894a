"""``longseq data build|stats`` on tiny fixtures."""

import json

import numpy as np
import pytest

from longseq.cli import main
from longseq.commands.data import parse_overrides


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "cache"))


def make_stdlib(root, n=30):
    rng = np.random.default_rng(0)
    for i in range(n):
        p = root / f"m{i:02d}.py"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"def f%d(x):\n    return x\n" % i * int(rng.integers(20, 60)))
    return root


def test_parse_overrides():
    assert parse_overrides(["seq_len=512", "permute=true", "data_dir=/x/y", "root=None", "lr=1e-3", "s='a=b'"]) == {
        "seq_len": 512,
        "permute": True,
        "data_dir": "/x/y",
        "root": None,
        "lr": 1e-3,
        "s": "a=b",
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["seq_len"])


def test_data_build(tmp_path, capsys):
    root = make_stdlib(tmp_path / "lib")
    rc = main(
        [
            "data",
            "build",
            "lm_code",
            "--set",
            f"root={root}",
            "--set",
            "seq_len=32",
            "--set",
            "max_train_bytes=None",
            "--seed",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "lm_code (preset quick, seed 3): lm, vocab 256, length 32" in out
    assert "corpus_fingerprint" in out and out.count("fingerprint ") >= 3
    assert (tmp_path / "cache" / "lm_code").is_dir()


def test_data_errors(tmp_path, capsys):
    assert main(["data", "build", "lm_code", "--set", "bogus=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err
    assert main(["data", "build", "nope"]) == 2
    assert main(["data", "stats", "lm_code", "--set", f"root={tmp_path / 'missing'}"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_data_stats(tmp_path, capsys):
    root = make_stdlib(tmp_path / "lib", n=200)
    args = [
        "data",
        "stats",
        "retrieval",
        "--set",
        f"root={root}",
        "--set",
        "seq_len=64",
        "--set",
        "n_train=100",
        "--set",
        "n_val=20",
        "--set",
        "n_test=20",
    ]
    assert main(args + ["--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["pair"] is True and st["splits"]["train"]["class_counts"] == [50, 50]
    assert st["splits"]["train"]["length"] == {"min": 64, "mean": 64.0, "max": 64, "median": 64.0}
    assert st["splits"]["train"]["padding_fraction"] == 0.0
    assert main(args) == 0
    assert "build_seconds" in capsys.readouterr().out


def test_data_stats_lm(tmp_path, capsys):
    root = make_stdlib(tmp_path / "lib")
    assert (
        main(
            [
                "data",
                "stats",
                "lm_code",
                "--set",
                f"root={root}",
                "--set",
                "seq_len=16",
                "--set",
                "train_windows=50",
                "--json",
            ]
        )
        == 0
    )
    st = json.loads(capsys.readouterr().out)
    assert st["kind"] == "lm" and st["splits"]["train"]["n"] == 50
    assert st["splits"]["train"]["length"]["min"] == 16
    assert sum(st["split_bytes"].values()) == sum(p.stat().st_size for p in root.glob("*.py"))
    # evaluation windows cover each split's bytes once: sum of real targets = bytes - 1
    for s in ("validation", "test"):
        if st["split_bytes"][s] > 17:
            v = st["splits"][s]
            assert round(v["targets_per_example"]["mean"] * v["n"]) == st["split_bytes"][s] - 1
