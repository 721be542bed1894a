"""``longseq operators`` end to end on the tiny presets, and the resolution-table helpers."""

import json

from longseq import tasks
from longseq.cli import main
from longseq.operators import FNO1d
from longseq.operators.evaluate import markdown_table, relative_l2_at, resolution_table
from longseq.train.trainer import evaluate


def test_operators_command_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LONGSEQ_PROGRESS", "0")
    out = tmp_path / "ops"
    assert (
        main(
            [
                "operators",
                "--task",
                "burgers",
                "--preset",
                "tiny",
                "--operators",
                "fno,lowrank",
                "--steps",
                "3",
                "--out",
                str(out),
                "--no-progress",
                "--mixer-option",
                "width=8",
            ]
        )
        == 0
    )
    table = json.loads((out / "table.json").read_text())
    assert set(table["relative_l2"]) == {"fno", "lowrank"}
    assert set(table["relative_l2"]["fno"]) == {"32", "64", "128", "256", "512"}
    assert "s=64*" in (out / "table.md").read_text()
    # a second call reuses the finished runs, and times models and solver per resolution
    assert (
        main(
            [
                "operators",
                "--task",
                "burgers",
                "--preset",
                "tiny",
                "--operators",
                "fno",
                "--out",
                str(out),
                "--report-only",
                "--speed",
            ]
        )
        == 0
    )
    sp = json.loads((out / "table.json").read_text())["seconds_per_sample"]
    assert set(sp["solver"]) == set(sp["models"]["fno"]) == {"32", "64", "128", "256", "512"}
    assert all(v > 0 for v in sp["solver"].values())


def test_resolution_table_agrees_with_trainer_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGSEQ_DATA", str(tmp_path))
    task = tasks.build("burgers", preset="tiny")
    m = FNO1d(modes=4, width=8)
    table = resolution_table(m, task)
    ev = evaluate(m, task.test, batch_size=3, metric="rel_l2")
    assert abs(table[task.meta.extra["resolution"]] - ev["rel_l2"]) < 1e-6
    assert abs(relative_l2_at(m, task.test, batch_size=1) - ev["rel_l2"]) < 1e-6
    md = markdown_table({"fno": table}, 64, {"fno": {64: 0.1}}, {"fno": 5})
    assert "| fno (paper) |" in md and "s=64*" in md
