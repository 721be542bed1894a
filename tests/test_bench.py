"""The benchmark harness on tiny settings: outputs are well formed, budgets stop, failures are
recorded, missing peers are skipped. Timings are never asserted on (the machine is shared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from longseq import cli, mixers
from longseq.bench import SpeedConfig, format_markdown, peers, run_speed, write_report
from longseq.bench.speed import _predict, _predicted_stop, run_job, run_module_job, worker_command

TINY = dict(lengths=[64, 128], d_model=32, heads=2, repeats=2, warmup=1, threads=1, matmul_n=64)
ROW_KEYS = {
    "name",
    "source",
    "L",
    "status",
    "fwd_ms",
    "fwdbwd_ms",
    "peak_fwd_mb",
    "peak_fwdbwd_mb",
    "flops_fwd",
    "gflops_fwd",
    "gflops_fwdbwd",
    "pct_of_matmul_peak",
    "ratio_vs_softmax",
    "options",
}
TIME_KEYS = {"median", "q25", "q75", "min", "max", "n"}


def _table_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:]]  # without the header


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_speed_cli(tmp_path, capsys):
    out = tmp_path / "speed"
    rc = cli.main(
        [
            "bench",
            "speed",
            "--mixers",
            "softmax",
            "--lengths",
            "64,128",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--repeats",
            "2",
            "--threads",
            "1",
            "--no-isolate",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "longseq.bench/1" and res["kind"] == "speed"
    assert {"config", "machine", "targets", "rows"} <= set(res)
    assert res["machine"]["matmul_fp32_gflops"] > 0
    assert [r["L"] for r in res["rows"]] == [64, 128]
    for r in res["rows"]:
        assert r["status"] == "ok", r
        assert ROW_KEYS <= set(r)
        assert TIME_KEYS <= set(r["fwd_ms"]) and TIME_KEYS <= set(r["fwdbwd_ms"])
        assert r["fwd_ms"]["n"] == 2 and r["fwd_ms"]["min"] <= r["fwd_ms"]["median"] <= r["fwd_ms"]["max"]
        assert r["flops_fwd"] == mixers.spec("softmax").flops(r["L"], 32, 2, False)
        assert r["ratio_vs_softmax"] == 1.0
    md = (out / "results.md").read_text()
    rows = _table_rows(md)
    assert [(r[0], r[1]) for r in rows] == [("softmax", "64"), ("softmax", "128")]
    assert "| method" in capsys.readouterr().out  # the table is printed
    if _has_matplotlib():
        assert (out / "speed.png").stat().st_size > 0 and (out / "memory.png").stat().st_size > 0


def test_worker_runs_in_a_fresh_process():
    """The default path: timing in one interpreter, peak memory in a second one with an exact heap
    (fixed mmap threshold), JSON back on stdout."""
    job = {
        "kind": "module",
        "source": "mixer",
        "name": "softmax",
        "options": {},
        "L": 64,
        "batch": 1,
        "d_model": 32,
        "heads": 2,
        "causal": True,
        "dtype": "float32",
        "backward": True,
        "repeats": 2,
        "warmup": 1,
        "threads": 1,
        "device": "cpu",
        "seed": 0,
        "time_budget": None,
        "memory_repeats": 3,
    }
    r = run_module_job(job, timeout=300)
    assert r["status"] == "ok", r
    assert r["fwd_ms"]["n"] == 2 and r["fwdbwd_ms"]["n"] == 2 and r["worker_s"] > 0 and r["finite"]
    assert r["peak_fwdbwd_mb"] >= 0 and r["memory_method"].split("+")[0] in ("rss_hwm_reset", "ru_maxrss")
    assert len(r["peak_fwdbwd_mb_all"]) == 3 and abs(r["peak_fwdbwd_mb"] - sorted(r["peak_fwdbwd_mb_all"])[1]) < 0.01
    if sys.platform == "linux":
        assert r["memory_method"].endswith("+mmap64k"), r["memory_method"]
    timing_only = run_job(job | {"measure": "time"}, timeout=300)
    assert timing_only["status"] == "ok" and "peak_fwdbwd_mb" not in timing_only
    bad = run_job(job | {"name": "no_such_mixer"}, isolate=False)
    assert bad["status"] == "error" and "unknown mixer" in bad["error"]


def test_worker_stderr_is_clean_and_crash_reports_say_why(monkeypatch):
    """A worker prints nothing on stderr when all is well (no runpy warning that would end up as
    the reason of a crash), and a killed worker is reported as such, with its stderr tail if any."""
    job = {
        "kind": "module",
        "source": "mixer",
        "name": "softmax",
        "options": {},
        "L": 16,
        "batch": 1,
        "d_model": 8,
        "heads": 2,
        "causal": True,
        "dtype": "float32",
        "backward": False,
        "repeats": 1,
        "warmup": 0,
        "threads": 1,
        "device": "cpu",
        "seed": 0,
        "measure": "time",
    }
    proc = subprocess.run(worker_command(job), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
    import longseq.bench.speed as speed_module

    for rc, err, expected in [
        (-9, "", "worker killed (out of memory?)"),
        (1, "a\nb\nc\nValueError: x", "worker exit code 1: b | c | ValueError: x"),
    ]:
        monkeypatch.setattr(
            speed_module.subprocess, "run", lambda *a, rc=rc, err=err, **k: subprocess.CompletedProcess(a, rc, "", err)
        )
        assert run_job(job) == {"status": "crashed", "error": expected}


def test_speed_api_baseline_ratios_and_report(tmp_path):
    res = run_speed(["softmax_naive"], SpeedConfig(causal=True, isolate=False, **TINY), log=lambda m: None)
    names = [(r["name"], r["L"]) for r in res["rows"]]
    assert names == [("softmax", 64), ("softmax", 128), ("softmax_naive", 64), ("softmax_naive", 128)]
    naive = [r for r in res["rows"] if r["name"] == "softmax_naive"]
    assert all(r["status"] == "ok" and r["ratio_vs_softmax"] > 0 and r["gflops_fwd"] > 0 for r in naive)
    paths = write_report(res, str(tmp_path))
    assert {os.path.basename(p) for p in paths} >= {"results.json", "results.md"}
    rows = _table_rows(format_markdown(res))
    assert len(rows) == 4 and all(len(r) == 9 for r in rows)  # no "vs twin" outside peers
    assert json.loads((tmp_path / "results.json").read_text())["config"]["causal"] is True


def test_no_backward_has_no_fwdbwd_column():
    res = run_speed(["softmax"], SpeedConfig(backward=False, isolate=False, **TINY), log=lambda m: None)
    assert all("fwdbwd_ms" not in r for r in res["rows"])
    header = [ln for ln in format_markdown(res).splitlines() if ln.startswith("| method")][0]
    assert "fwd+bwd" not in header


def test_time_budget_stops_and_records_why():
    cfg = SpeedConfig(time_budget=1e-9, isolate=False, **TINY)
    res = run_speed(["softmax"], cfg, baseline=None, log=lambda m: None)
    first, second = res["rows"]
    assert first["status"] == "ok" and first["over_time_budget"] and "time budget" in first["reason"]
    assert first["fwd_ms"]["n"] == 1 and "fwdbwd_ms" not in first  # stopped after the first call
    assert second["status"] == "skipped" and "time budget" in second["reason"] and "L=64" in second["reason"]
    assert "time budget" in res["targets"][0]["stopped"]
    assert "stopped: time budget" in format_markdown(res)


def test_predicted_budget_stop():
    assert _predict([(64, 1.0)], 128) is None
    assert _predict([(64, 1.0), (128, 4.0)], 256) == pytest.approx(16.0)  # quadratic
    assert _predict([(64, 1.0), (128, 1.0)], 256) == pytest.approx(2.0)  # exponent clipped to >= 1
    cfg = SpeedConfig(memory_budget=10.0, time_budget=None, lengths=[64])
    assert "memory budget: predicted" in _predicted_stop(cfg, [], [(64, 2.0), (128, 4.0)], 512)
    assert _predicted_stop(cfg, [], [(64, 2.0), (128, 4.0)], 256) is None


def test_errors_are_recorded_and_stop_the_mixer():
    if "linformer" not in mixers.names():
        pytest.skip("linformer not registered")
    cfg = SpeedConfig(isolate=False, **(TINY | {"lengths": [64, 128, 256]}))
    res = run_speed(
        ["linformer"], cfg, options={"linformer": {"max_len": 64, "k": 16}}, baseline=None, log=lambda m: None
    )
    statuses = [r["status"] for r in res["rows"]]
    assert statuses == ["ok", "error", "skipped"]
    assert "max_len" in res["rows"][1]["error"]
    assert res["targets"][0]["stopped"].startswith("error at L=128")


def test_length_option_follows_L():
    if "linformer" not in mixers.names():
        pytest.skip("linformer not registered")
    res = run_speed(
        ["linformer"],
        SpeedConfig(isolate=False, backward=False, **TINY),
        baseline=None,
        options={"linformer": {"k": 16}},
        log=lambda m: None,
    )
    assert [r["options"]["max_len"] for r in res["rows"]] == [64, 128]
    assert all(r["status"] == "ok" for r in res["rows"])


def test_unsupported_mode_is_skipped_not_crashed():
    bidir_only = [n for n in mixers.names() if not mixers.spec(n).causal]
    if not bidir_only:
        pytest.skip("every mixer has a causal mode")
    res = run_speed([bidir_only[0]], SpeedConfig(causal=True, isolate=False, **TINY), baseline=None, log=lambda m: None)
    assert all(r["status"] == "skipped" and "causal" in r["reason"] for r in res["rows"])


def test_invalid_settings_are_value_errors(capsys):
    with pytest.raises(ValueError, match="divisible"):
        SpeedConfig(d_model=30, heads=4)
    with pytest.raises(ValueError, match="dtype"):
        SpeedConfig(dtype="int8")
    assert cli.main(["bench", "speed", "--mixers", "no_such_mixer", "--lengths", "64"]) == 2
    assert "unknown mixer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown peer"):
        peers.peer_targets(["no-such-peer"], causal=False)


# ------------------------------------------------------------------------------- peers
@pytest.mark.parametrize("causal", [False, True])
def test_peer_adapters_keep_the_shape(causal):
    avail = peers.available_peers()
    for name, p in peers.PEERS.items():
        if avail[name] is not None or (causal and not p.causal):
            continue
        setting = {p.setting: 16} if p.setting else {}
        m = peers.build(name, 32, heads=2, causal=causal, seq_len=80, **setting).eval()
        x = torch.randn(2, 80, 32)
        with torch.no_grad():
            y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all(), name


def test_peer_causal_adapters_are_causal():
    avail = peers.available_peers()
    for name, p in peers.PEERS.items():
        if avail[name] is not None or not p.causal:
            continue
        setting = {p.setting: 16} if p.setting else {}
        m = peers.build(name, 32, heads=2, causal=True, seq_len=64, **setting).eval()
        x = torch.randn(1, 64, 32)
        x2 = x.clone()
        x2[:, 40:] += 1.0
        with torch.no_grad():
            y, y2 = m(x)[:, :40], m(x2)[:, :40]
        if name == "performer-pytorch":  # its key stabiliser is a max over all positions (see peers.py)
            torch.testing.assert_close(y, y2, atol=1e-2, rtol=0, msg=name)
        else:
            torch.testing.assert_close(y, y2, atol=0, rtol=0, msg=name)


def test_peers_run_with_twins_and_missing_packages_skip(monkeypatch, tmp_path):
    missing = peers.Peer(
        "not-installed", "surely_not_an_installed_module_xyz", "not-installed", "softmax", True, True, None
    )
    monkeypatch.setitem(peers.PEERS, missing.name, missing)
    rc = cli.main(
        [
            "bench",
            "peers",
            "--peers",
            "torch-sdpa,not-installed,linformer",
            "--options",
            '{"linformer": {"k": 16}}',
            "--lengths",
            "64,128",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--repeats",
            "2",
            "--threads",
            "1",
            "--no-isolate",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["kind"] == "peers"
    rows = {(r["source"], r["name"], r["L"]): r for r in res["rows"]}
    sdpa = rows[("peer", "torch-sdpa", 64)]
    assert sdpa["status"] == "ok" and sdpa["twin"] == "softmax" and sdpa["ratio_vs_twin"] > 0
    assert rows[("peer", "not-installed", 64)]["status"] == "skipped"
    assert "not installed" in rows[("peer", "not-installed", 64)]["reason"]
    if peers.available_peers()["linformer"] is None and "linformer" in mixers.names():
        lin = rows[("peer", "linformer", 128)]
        assert lin["status"] == "ok" and lin["options"] == {"k": 16}  # mapped from the twin's options
        assert lin["ratio_vs_twin"] > 0 and rows[("mixer", "linformer", 128)]["status"] == "ok"
    md = (tmp_path / "results.md").read_text()
    assert "torch-sdpa (peer)" in md and "`not-installed (peer)` skipped" in md
    labels = [r[0] for r in _table_rows(md)]
    assert labels.index("torch-sdpa (peer)") == labels.index("softmax") + 2  # right after its twin's rows


# ------------------------------------------------------------------------------- generate
def test_generate_cli(tmp_path):
    pytest.importorskip("longseq.models")
    out = tmp_path / "gen"
    rc = cli.main(
        [
            "bench",
            "generate",
            "--mixers",
            "softmax",
            "--prompt",
            "16",
            "--new",
            "8",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--layers",
            "1",
            "--threads",
            "1",
            "--no-isolate",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    (row,) = res["rows"]
    assert row["status"] == "ok", row
    assert row["tokens_per_s"] > 0 and row["prefill_ms"] > 0 and row["step_ms"]["n"] == 8
    assert _table_rows((out / "results.md").read_text())[0][0] == "softmax"


def test_ratios_alternate_rounds_and_report(tmp_path, capsys, monkeypatch):
    """bench ratios: per round the baseline, then each mixer; the speed-up of a round is the
    baseline's time over the mixer's; the median and range are over the rounds."""
    import longseq.bench.ratios as ratios_module
    from longseq.bench import RatioConfig, format_ratios, run_ratios

    order, real = [], ratios_module.run_job

    def spy(job, *a, **k):
        order.append((job["name"], job["measure"]))
        return real(job, *a, **k)

    monkeypatch.setattr(ratios_module, "run_job", spy)
    cfg = RatioConfig(lengths=[64], d_model=32, heads=2, repeats=2, warmup=1, threads=1, isolate=False, rounds=3)
    res = run_ratios(["softmax_naive", "softmax"], cfg, log=None)
    timed = [n for n, m in order if m == "time"]
    assert timed == ["softmax", "softmax_naive"] * 3  # alternation, baseline first
    assert [n for n, m in order if m == "memory"] == ["softmax", "softmax_naive"]
    base, naive = res["rows"]
    assert base["ratios"] == [1.0] * 3
    assert naive["ratios"] == pytest.approx([b / m for b, m in zip(base["times_ms"], naive["times_ms"])])
    assert naive["ratio_min"] <= naive["ratio_median"] <= naive["ratio_max"]
    assert naive["peak_mb"] is not None
    assert "`softmax_naive`" in format_ratios(res)
    rc = cli.main(
        [
            "bench",
            "ratios",
            "--mixers",
            "softmax_naive",
            "--lengths",
            "64",
            "--rounds",
            "1",
            "--d-model",
            "32",
            "--heads",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
            "--no-isolate",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 0 and json.loads((tmp_path / "r" / "results.json").read_text())["kind"] == "ratios"
    assert "speed-up (median)" in capsys.readouterr().out
    with pytest.raises(ValueError, match="one length"):
        RatioConfig(lengths=[64, 128])
    with pytest.raises(ValueError, match="rounds"):
        RatioConfig(lengths=[64], rounds=0)
