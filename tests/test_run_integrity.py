"""Run integrity (issue 26), by fault injection: refused resumes and reused directories, locks, kill -9
during training and during checkpoint writes, damaged checkpoints and metrics, storage errors,
Ctrl-C, the arena's stored selection, and CLI settings checked before any work.

Kill tests run the real CLI in child processes (tests/fault_child.py) and compare every metrics
record (except the wall-clock ``tokens_per_s``) with an uninterrupted run: bit-identical on CPU."""

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import longseq
from longseq.cli import main
from longseq.train import rundir

HERE = Path(__file__).parent
SRC = Path(longseq.__file__).resolve().parents[1]
TINY = [
    "--task",
    "mqar",
    "--task-option",
    "n_train=64",
    "--task-option",
    "n_val=8",
    "--task-option",
    "n_test=8",
    "--task-option",
    "seq_len=16",
    "--task-option",
    "num_kv_pairs=2",
    "--batch-size",
    "8",
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--log-every",
    "1",
    "--no-progress",
    "--threads",
    "1",
]
KILL_RUN = TINY + [
    "--mixer",
    "softmax",
    "--dropout",
    "0.1",
    "--steps",
    "24",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "2",
    "--warmup",
    "3",
]


def train_args(out, *extra, mixer="softmax", steps=4):
    return [
        "train",
        *TINY,
        "--mixer",
        mixer,
        "--steps",
        str(steps),
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def records(run_dir):
    out = []
    for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        r = json.loads(ln)
        r.pop("tokens_per_s", None)
        out.append(r)
    return out


# ---------------------------------------------------------------------------- identity and reuse
def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    before = (out / "config.json").read_text(), (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    for extra, listed in (
        (["--mixer", "linear"], "model.layers[0].mixer: 'softmax' -> 'linear'"),
        (["--lr", "0.1"], "train.lr"),
        (["--seed", "1"], "train.seed: 0 -> 1"),
        (["--task-option", "n_train=32"], "task_options.n_train: 64 -> 32"),
    ):
        args = train_args(out, "--resume")
        if extra[0] == "--mixer":
            args[args.index("--mixer") + 1] = extra[1]
        else:
            args += extra
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert "--resume refused" in err and listed in err, (extra, err)
    # nothing of the run was touched
    assert ((out / "config.json").read_text(), (out / "metrics.jsonl").read_text()) == before
    # a safe change is allowed when named: more steps
    assert main(train_args(out, "--resume", "--allow-change", "steps", steps=6)) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["steps"] == 6 and "train.steps: 4 -> 6" in cfg["resumed"][0]["changed"][0]
    assert [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert main(train_args(out, "--resume", "--allow-change", "lr")) == 2
    assert "cannot change on resume" in capsys.readouterr().err


def test_new_run_into_another_runs_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    capsys.readouterr()
    assert main(train_args(out, mixer="linear")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert json.loads((out / "config.json").read_text())["model"]["layers"][0]["mixer"] == "softmax"
    assert main(train_args(out, "--overwrite", mixer="linear")) == 0
    assert json.loads((out / "config.json").read_text())["model"]["layers"][0]["mixer"] == "linear"
    assert [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2, 3, 4]  # not appended
    assert main(train_args(out, "--overwrite", "--resume")) == 2


def test_second_concurrent_writer_fails_fast_and_stale_locks_are_taken(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from longseq.train.rundir import DirLock; "
            "DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        assert main(train_args(out)) == 2
        assert time.perf_counter() - t0 < 10
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid}" in err and "cannot write one directory" in err
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (killed -9 style): its lock is stale and the next run takes it
    assert (out / ".lock").exists()
    with pytest.warns(RuntimeWarning, match="stale lock"):
        assert main(train_args(out)) == 0
    assert not (out / ".lock").exists()


# ---------------------------------------------------------------------------- kill -9 loops
def _child(args, out, env=None):
    return subprocess.Popen(
        [sys.executable, str(HERE / "fault_child.py"), "train", *args, "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(path):
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _child(KILL_RUN, out)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    return records(out)


def _kill_loop(tmp_path, reference, n_kills, seed):
    """Kill -9 at random points (one of them inside a checkpoint write), resume each time; the
    finished run's metrics equal the uninterrupted run's."""
    out = tmp_path / "killed"
    rng = random.Random(seed)
    hang = rng.randrange(n_kills)
    total = len(reference)
    for i in range(n_kills):
        args = KILL_RUN + (["--resume"] if (out / "config.json").exists() else [])
        if i == hang:  # in the middle of writing one of the next checkpoints
            marker = tmp_path / f"marker{i}"
            done = rundir.load_checkpoint(out / "checkpoint.pt")["step"] if (out / "checkpoint.pt").exists() else 0
            at = min(22, done + 2 * rng.randint(1, 3))
            p = _child(
                args,
                out,
                {"FAULT_HANG_AT_CHECKPOINT": str(at), "FAULT_MARKER": str(marker), "FAULT_STEP_DELAY": "0.005"},
            )
            t0 = time.time()
            while not marker.exists() and p.poll() is None and time.time() - t0 < 60:
                time.sleep(0.01)
            assert marker.exists(), p.stderr.read() if p.poll() is not None else "no marker"
        else:
            target = _lines(out / "metrics.jsonl") + rng.randint(1, total // 3)
            p = _child(args, out, {"FAULT_STEP_DELAY": "0.02"})
            t0 = time.time()
            while _lines(out / "metrics.jsonl") < target and p.poll() is None and time.time() - t0 < 60:
                time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        p.wait()
    p = _child(KILL_RUN + ["--resume"], out)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert records(out) == reference
    assert not list(out.rglob(".*.tmp")) and not (out / ".lock").exists()


def test_kill_9_then_resume_is_bit_identical(tmp_path, reference):
    _kill_loop(tmp_path, reference, n_kills=2, seed=0)


@pytest.mark.slow
def test_kill_9_loop_many_cycles(tmp_path, reference):
    _kill_loop(tmp_path, reference, n_kills=6, seed=1)


def test_ctrl_c_saves_a_checkpoint_and_says_so(tmp_path, reference):
    out = tmp_path / "run"
    p = _child(KILL_RUN, out, {"FAULT_STEP_DELAY": "0.02"})
    t0 = time.time()
    while _lines(out / "metrics.jsonl") < 7 and p.poll() is None and time.time() - t0 < 60:
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 130
    err = p.stderr.read().strip().splitlines()
    assert len(err) == 1 and "interrupted after step" in err[0] and "--resume" in err[0], err
    step = int(err[0].split("interrupted after step ")[1].split()[0])
    assert rundir.load_checkpoint(out / "checkpoint.pt")["step"] == step and 0 < step < 24
    assert not (out / ".lock").exists()
    p = _child(KILL_RUN + ["--resume"], out)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert records(out) == reference  # pending (unlogged) losses are in the checkpoint too


# ---------------------------------------------------------------------------- damaged files
def test_flipped_byte_in_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    good = (out / "checkpoint.pt").read_bytes()
    # a changed weight value with an intact file structure: only the checksum can tell
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    name = next(iter(ck["model"]))
    ck["model"][name].view(-1)[0] += 1e-3
    buf = io.BytesIO()
    torch.save(ck, buf)
    trailer = good[good.rfind(b"\nlongseq-sha256:") :]
    (out / "checkpoint.pt").write_bytes(buf.getvalue() + trailer)
    capsys.readouterr()
    assert main(train_args(out, "--resume")) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt is corrupt: its content does not match the recorded sha256" in err
    # flipped bytes anywhere in the file: always refused with a message naming the file
    rng = random.Random(0)
    for _ in range(5):
        data = bytearray(good)
        i = rng.randrange(len(data))
        data[i] ^= 0xFF
        (out / "checkpoint.pt").write_bytes(bytes(data))
        with pytest.raises(ValueError, match="checkpoint .*checkpoint.pt is corrupt"):
            rundir.load_checkpoint(out / "checkpoint.pt")
    (out / "checkpoint.pt").write_bytes(good)
    assert rundir.load_checkpoint(out / "checkpoint.pt")["step"] == 4


def test_truncated_metrics_line_is_repaired_and_temp_files_cleaned(tmp_path):
    out = tmp_path / "run"
    assert main(train_args(out)) == 0
    complete = (out / "metrics.jsonl").read_text()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "split": "tra')  # a kill in the middle of an append
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"\0" * 1000)  # a kill before atomic_write's rename
    (out / "model" / ".model.safetensors.ab.tmp").write_bytes(b"\0" * 10)
    with pytest.warns(RuntimeWarning) as caught:
        assert main(train_args(out, "--resume", "--allow-change", "steps", steps=6)) == 0
    msgs = [str(w.message) for w in caught]
    assert any(str(out / "metrics.jsonl") in m and "damaged last line" in m for m in msgs), msgs
    assert any("removed 2 temp file(s)" in m for m in msgs), msgs
    assert not list(out.rglob(".*.tmp"))
    text = (out / "metrics.jsonl").read_text()
    assert text.startswith(complete.split('{"step": 4, "split": "test"')[0])
    assert [r["step"] for r in records(out) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    # damage before the last line is not guessed at: an error naming the file and line
    lines = text.splitlines()
    lines[2] = lines[2][:10]
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl is damaged at line 3"):
        rundir.read_metrics(out / "metrics.jsonl")


# ---------------------------------------------------------------------------- storage errors
def test_unwritable_out_is_a_one_sentence_message(tmp_path, capsys, monkeypatch):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(train_args(f)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {f}" in err and "is a file" in err
    if os.geteuid() != 0:  # root writes anywhere: then the permission error is simulated below
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert main(train_args(ro / "run")) == 1
        assert "permission denied" in capsys.readouterr().err
    real_mkdir = Path.mkdir

    def denied(self, *a, **k):
        if "denied" in str(self):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", denied)
    assert main(train_args(tmp_path / "denied")) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"longseq train: error: cannot write {tmp_path / 'denied'}: permission denied"


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter "
            "failed writing file data/3: file write failed"
        ),
    ],
    ids=["oserror", "torch-writer"],
)
def test_disk_full_is_a_one_sentence_message(tmp_path, capsys, monkeypatch, exc):
    def full(obj, tmp):
        raise exc

    monkeypatch.setattr(rundir, "_dump", full)
    out = tmp_path / "run"
    assert main(train_args(out)) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"cannot write {out / 'checkpoint.pt'}" in err
    assert ("no space left" in err) if isinstance(exc, OSError) else ("disk full?" in err)
    assert not list(out.glob(".*.tmp")) and not (out / ".lock").exists()


# ---------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lr", "inf"], "learning rate (lr) must be a finite number > 0, got inf"),
        (["--lr", "0"], "learning rate (lr) must be a finite number > 0"),
        (["--weight-decay", "-1"], "weight_decay must be a finite number >= 0, got -1"),
        (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
        (["--grad-clip", "nan"], "grad_clip must be a finite number"),
        (["--device", "nosuchdevice"], "unknown device 'nosuchdevice'"),
        (["--device", "cuda:7"], "not available"),
        (["--task-option", "seq_len=abc"], "setting seq_len must be an integer, got 'abc'"),
        (["--task-option", "n_train=0"], "setting n_train must be a positive integer, got 0"),
        (["--task-option", "power_a=-1.0"], "setting power_a must be a number >= 0"),
        (["--task-option", "classify=maybe"], "setting classify must be true or false"),
        (["--mixer-option", "rope=maybe"], "option rope must be true or false, got 'maybe'"),
        (["--d-model", "0"], "--d-model must be a positive integer"),
        (["--allow-change", "steps"], "--allow-change only applies with --resume"),
    ],
)
def test_bad_settings_are_messages_before_any_work(tmp_path, capsys, extra, message):
    if extra == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "run"
    assert main(train_args(out, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("longseq train: error:"), err
    assert not out.exists()  # refused before anything was written


def test_demo_steps_zero_is_refused(tmp_path, capsys):
    assert main(["demo", "--steps", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--steps must be a positive integer, got 0" in capsys.readouterr().err


# ---------------------------------------------------------------------------- arena
ARENA = [
    "--no-speed",
    "--threads",
    "1",
    "--model-option",
    "d_model=16",
    "--model-option",
    "n_layers=1",
    "--train-option",
    "batch_size=8",
    "--task-option",
    "mqar.n_train=64",
    "--task-option",
    "mqar.n_val=8",
    "--task-option",
    "mqar.n_test=8",
    "--task-option",
    "mqar.seq_len=16",
    "--task-option",
    "mqar.num_kv_pairs=2",
]


def test_arena_resume_continues_the_stored_selection(tmp_path, capsys):
    out = tmp_path / "arena"
    assert (
        main(
            [
                "arena",
                "--mixers",
                "softmax,linear",
                "--tasks",
                "mqar",
                "--steps",
                "2",
                "--seed",
                "3",
                "--out",
                str(out),
                *ARENA,
            ]
        )
        == 0
    )
    stored = json.loads((out / "arena.json").read_text())
    assert stored["mixers"] == ["softmax", "linear"] and stored["seed"] == 3 and stored["steps"] == 2
    (out / "runs" / "mqar" / "linear" / "final.json").unlink()  # interrupted after its last checkpoint
    capsys.readouterr()
    # `longseq arena --out DIR --resume`, as the README writes it: exactly the stored arena
    assert main(["arena", "--out", str(out), "--resume"]) == 0
    io = capsys.readouterr()
    assert "2 of 2 runs done" in io.out
    assert json.loads((out / "arena.json").read_text())["mixers"] == ["softmax", "linear"]
    lb = json.loads((out / "leaderboard.json").read_text())
    assert sorted(r["mixer"] for r in lb["runs"]) == ["linear", "softmax"]
    # conflicting arguments are refused, listing them; reuse without --resume is refused
    assert main(["arena", "--out", str(out), "--resume", "--mixers", "softmax,s4d", "--seed", "4"]) == 2
    err = capsys.readouterr().err
    assert (
        "--resume refused" in err
        and "mixers: ['softmax', 'linear'] -> ['softmax', 's4d']" in err
        and "seed: 3 -> 4" in err
    )
    assert main(["arena", "--mixers", "softmax", "--tasks", "mqar", "--steps", "1", "--out", str(out), *ARENA]) == 2
    assert "already holds an arena" in capsys.readouterr().err
    assert main(["arena", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_bench_exits_non_zero_with_the_failed_configurations(monkeypatch, capsys):
    import longseq.bench as bench

    res = {
        "rows": [
            {"source": "longseq", "name": "softmax", "L": 256, "status": "ok"},
            {"source": "longseq", "name": "s4", "L": 256, "status": "error", "error": "ValueError: boom"},
            {"source": "longseq", "name": "s5", "L": 65536, "status": "oom", "error": "out of memory"},
        ]
    }
    monkeypatch.setattr(bench, "run_speed", lambda *a, **k: res)
    monkeypatch.setattr(bench, "format_table", lambda r: "table")
    assert main(["bench", "speed", "--mixers", "softmax,s4,s5", "--lengths", "256"]) == 1
    err = capsys.readouterr().err
    assert "1 configuration(s) failed" in err and "longseq/s4 L=256: ValueError: boom" in err and "s5" not in err
    res["rows"].pop(1)
    assert main(["bench", "speed", "--mixers", "softmax,s5", "--lengths", "256"]) == 0
