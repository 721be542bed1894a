"""The library reports through ``logging`` (no prints outside the CLI), and the CLI shows the
``longseq`` loggers' INFO records on stderr as bare lines, as the prints were."""

import ast
import logging
import pathlib

from longseq import cli
from longseq.arena import runner

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "longseq"


def test_no_print_calls_in_the_library():
    """Only the CLI (``cli.py``, ``commands/``) prints; everything else logs."""
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "cli.py" or rel.startswith("commands/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"print() in the library: {offenders}"


def test_arena_default_log_goes_to_its_logger_with_levels(caplog):
    with caplog.at_level(logging.INFO, logger="longseq"):
        runner._log_default("[mqar/softmax] finished earlier: skipped")
        runner._log_default("[mqar/local] error: ValueError: window")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("longseq.arena.runner", logging.INFO, "[mqar/softmax] finished earlier: skipped"),
        ("longseq.arena.runner", logging.WARNING, "[mqar/local] error: ValueError: window"),
    ]


def test_bench_default_log_is_a_logger(monkeypatch, caplog):
    """``run_targets`` without ``log=`` reports through ``longseq.bench.speed``'s logger."""
    from longseq.bench import speed

    monkeypatch.setattr(speed, "machine_info", lambda *a, **k: {})
    monkeypatch.setattr(speed, "measure_matmul_peak", lambda *a, **k: {"gflops": 12.5, "n": 64})
    with caplog.at_level(logging.INFO, logger="longseq"):
        speed.run_targets([], speed.SpeedConfig(lengths=[8]))
    assert ("longseq.bench.speed", "fp32 matmul peak: 12.5 GFLOP/s (n=64)") in [
        (r.name, r.getMessage()) for r in caplog.records
    ]


def test_cli_shows_library_info_on_stderr_once(capsys):
    cli.configure_logging()
    cli.configure_logging()  # idempotent: one handler
    handlers = [h for h in logging.getLogger("longseq").handlers if isinstance(h, cli._StderrHandler)]
    assert len(handlers) == 1
    logging.getLogger("longseq.arena.runner").info("[speed] results exist: skipped")
    logging.getLogger("longseq.somewhere").debug("not shown")
    err = capsys.readouterr().err
    assert err == "[speed] results exist: skipped\n"


def test_cli_handler_follows_a_replaced_and_closed_stderr(monkeypatch):
    """The handler writes to the stderr of the moment, never flushing the one it wrote to before
    (which a test harness or a redirect may have closed)."""
    import io

    cli.configure_logging()
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logging.getLogger("longseq.x").info("one")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("longseq.x").warning("two")
    assert second.getvalue() == "two\n"
