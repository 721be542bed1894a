"""``run_arena``: train every selected mixer on every selected task, then write the leaderboard.

Layout of the output directory ``out``::

    arena.json                  the arena's settings (preset, tasks, mixers, overrides) and order
    runs/TASK/MIXER/            one trainer run dir (config.json, metrics.jsonl, checkpoint.pt,
                                model/, final.json) plus arena.json: the run's record (status
                                done | n/a | error | running, reason or error, parameter budget,
                                model overrides, trainer settings, training time)
    speed/                      ``longseq.bench`` speed results (results.json/.md, speed.png, memory.png)
    leaderboard.md, leaderboard.json, report.html   (see :mod:`longseq.arena.report`)

Every run record is on disk, so :func:`longseq.arena.write_report` rebuilds the report from the
run dirs alone. With ``resume=True`` runs that have ``final.json`` are skipped, runs with a
``checkpoint.pt`` continue from it (``train(..., resume=True)``, bit-exact on CPU), the others
start; without it every selected run starts afresh (its run dir is cleared first).

A mixer that cannot run a task is recorded as ``n/a`` with the reason: LM tasks need a causal
mode; a mixer whose maximum length (``max_len``) is below the task's length cannot read it.
Length options (``max_len``, ``seq_len``, ...) the user did not set are set to the task's
length, as in ``longseq bench``. Causal-only mixers (``h3``) run classification tasks causally
(the backbone's rule for ``causal=None``). Every model is matched to the softmax model's parameter
count (:mod:`longseq.arena.budget`). Each run validates ``CURVE_POINTS`` times (the training
curves) and checkpoints at least every 250 steps. A run that raises is recorded with its error and the arena
goes on; ``KeyboardInterrupt`` stops it, and ``resume=True`` continues later.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .. import mixers
from .. import tasks as task_registry
from ..bench import SpeedConfig, run_speed
from ..bench import write_report as write_bench
from ..train import TrainConfig, build_model, train
from ..train.rundir import DirLock, RunDirError, check_allow_changes, clean_temp_files, jsonable, storage
from .budget import TOLERANCE, count_parameters, match_budget
from .records import RUN_RECORD, SCHEMA, read_json, write_json
from .report import write_report

CURVE_POINTS = 10  # validation evaluations per run (training curves)
MAX_CHECKPOINT_EVERY = 250

# Arena presets: the task preset each task is built with and the speed benchmark's length grid.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"task_preset": "quick", "speed_lengths": [256, 1024, 4096]},
    "lra": {"task_preset": "lra", "speed_lengths": [1024, 2048, 4096, 8192, 16384]},
}

# ``--demo``: the subset ``make demo`` runs (its duration: README, Quick start). MQAR at its quick
# preset (4 pairs in 32 tokens; softmax jumps to > 0.95 near step 1,000 of 2,000), ListOps cut to
# 5,000 training examples and 200 steps (enough to leave chance, not to converge).
DEMO: dict[str, Any] = {
    "tasks": ["mqar", "listops"],
    "mixers": ["softmax", "local", "linear", "s4d"],
    "steps": {"listops": 200},
    "task_options": {"listops": {"n_train": 5000, "n_val": 500, "n_test": 500}},
    "mixer_options": {"local": {"window": 32}},
    "speed_lengths": [256, 512, 1024],
}


_logger = logging.getLogger(__name__)


def _log_default(msg: str) -> None:
    """Progress lines go to the ``longseq.arena.runner`` logger (the CLI shows INFO on stderr);
    lines that report an error or a failure at WARNING."""
    failed = " error:" in msg or " failed" in msg
    _logger.log(logging.WARNING if failed else logging.INFO, msg)


# ---------------------------------------------------------------------------- selection
def resolve_mixers(selection: str | list[str] | None) -> list[str]:
    """``"all"``/None = every registered mixer except the ``*_naive`` reference implementations."""
    if selection in (None, "all"):
        return [n for n in mixers.names() if not n.endswith("_naive")]
    names = selection.split(",") if isinstance(selection, str) else list(selection)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    for n in names:
        mixers.spec(n)  # ValueError listing the registered names
    return names


def resolve_tasks(selection: str | list[str] | None) -> list[str]:
    available = task_registry.names()
    if selection in (None, "all"):
        return available
    names = selection.split(",") if isinstance(selection, str) else list(selection)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; available tasks: {', '.join(available)}")
    return names


# ---------------------------------------------------------------------------- planning
def mixer_options_for(task, mixer: str, user: dict | None) -> dict:
    """The preset's mixer options, the user's for this mixer, and unset length options = task length."""
    opts = {**(task.model_defaults.get("mixer_options") or {}), **(user or {})}
    k = mixers.spec(mixer).max_len_option
    if k is not None and k not in opts:
        opts[k] = task.meta.seq_len
    return opts


def not_applicable(task, mixer: str, mixer_options: dict) -> str | None:
    """Why ``mixer`` cannot run ``task`` (checked before building), else None."""
    s = mixers.spec(mixer)
    if task.meta.kind == "regression":
        return "operator-learning (regression) task: compare operators with `longseq operators`"
    if task.meta.kind == "parsing":
        return "parsing task: scored by the structured models (longseq.structured), not by mixer models"
    if task.meta.kind == "lm" and not s.causal:
        return "bidirectional only: no causal mode for an LM task"
    L = task.meta.seq_len
    k = s.max_len_option
    v = mixer_options.get(k) if k is not None else None
    if isinstance(v, int) and v < L:
        return f"max length {k}={v} < task length {L}"
    return None


def _max_len_reason(model, L: int) -> str | None:
    """A mixer whose length bound (its ``MixerSpec.max_len_option``) is below the task length."""
    for m in model.modules():
        k = m.spec.max_len_option if isinstance(m, mixers.Mixer) else None
        cap = getattr(m, k, None) if k is not None else None
        if isinstance(cap, int) and cap < L:
            return f"max length {cap} < task length {L}"
    return None


def _model_overrides(model_options: dict | None, mixer_options: dict) -> dict:
    over = {k: v for k, v in (model_options or {}).items() if k != "mixer_options"}
    if mixer_options:
        over["mixer_options"] = mixer_options
    return over


def reference_parameters(task, model_options: dict | None, softmax_options: dict | None) -> int:
    """Parameter count of the softmax model of ``task`` (the budget every mixer is matched to)."""
    opts = mixer_options_for(task, "softmax", softmax_options)
    return count_parameters(task, "softmax", _model_overrides(model_options, opts))[0]


def plan_run(
    task,
    mixer: str,
    reference: int | None,
    model_options: dict | None = None,
    mixer_options: dict | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """``{"status": "n/a", "reason": ...}`` or ``{"status": "planned", "overrides": ..., "budget": ...}``."""
    opts = mixer_options_for(task, mixer, mixer_options)
    why = not_applicable(task, mixer, opts)
    if why:
        return {"status": "n/a", "reason": why}
    overrides = _model_overrides(model_options, opts)
    if reference is None:
        return {"status": "planned", "overrides": overrides, "budget": None}
    budget = match_budget(task, mixer, reference, overrides, tolerance)
    return {"status": "planned", "overrides": budget.pop("overrides"), "budget": budget}


# ---------------------------------------------------------------------------- records
def _task_info(task) -> dict:
    m = task.meta
    return {
        "name": m.name,
        "kind": m.kind,
        "metric": m.metric,
        "seq_len": m.seq_len,
        "preset": m.preset,
        "num_classes": m.num_classes,
        "vocab_size": m.vocab_size,
        "description": m.description,
    }


def _train_config(task, steps, seed, threads, device, train_options):
    d = {**task.train_defaults, **(train_options or {})}
    if isinstance(steps, dict):
        steps = steps.get(task.meta.name)
    if steps is not None:
        d["steps"] = int(steps)
    n = int(d.get("steps", TrainConfig.steps))
    d.setdefault("eval_every", max(1, n // CURVE_POINTS))
    d.setdefault("checkpoint_every", max(1, min(MAX_CHECKPOINT_EVERY, d["eval_every"])))
    d.update(seed=seed, threads=threads, device=device)
    d.setdefault("progress", False)
    return TrainConfig.from_dict(d)


# ---------------------------------------------------------------------------- the arena
def run_arena(
    preset: str = "quick",
    mixers: str | list[str] | None = "all",
    tasks: str | list[str] | None = "all",
    out: str | Path = "runs/arena",
    *,
    resume: bool = False,
    steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    device: str = "auto",
    task_options: dict[str, dict] | None = None,
    model_options: dict | None = None,
    train_options: dict | None = None,
    mixer_options: dict[str, dict] | None = None,
    tolerance: float = TOLERANCE,
    speed: bool = True,
    speed_lengths: list[int] | None = None,
    speed_options: dict | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    allow_changes: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Train every mixer of ``mixers`` on every task of ``tasks`` with the task's ``preset``
    hyperparameters at an equal parameter budget, benchmark their speed, and write the report.

    ``task_options``: per-task builder overrides (``{"mqar": {"seq_len": 24}}``);
    ``model_options``: model overrides for every run (``{"d_model": 16}``); ``train_options``:
    trainer settings for every run (``{"batch_size": 8}``); ``mixer_options``: per-mixer options
    (``{"local": {"window": 32}}``); ``steps`` overrides every run's step count (an int, or a dict
    task -> steps). Returns the
    leaderboard (what ``leaderboard.json`` holds).

    ``out`` belongs to one arena (:func:`_claim`): it is locked while the arena runs; an existing arena
    there is refused unless ``resume`` (the settings must equal the stored ``arena.json``, except
    ``steps`` when ``allow_changes`` names it) or ``overwrite`` (its runs, benchmark and report are
    removed first)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown arena preset {preset!r}; presets: {', '.join(PRESETS)}")
    for v in steps.values() if isinstance(steps, dict) else [steps]:
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"steps must be a positive int (or a dict task -> steps), got {steps!r}")
    log = log or _log_default
    mixer_names, task_names = resolve_mixers(mixers), resolve_tasks(tasks)
    task_options, mixer_options = dict(task_options or {}), dict(mixer_options or {})
    for what, given, allowed in (
        ("task_options", task_options, task_names),
        ("mixer_options", mixer_options, mixer_names + ["softmax"]),
    ):
        stray = sorted(set(given) - set(allowed))
        if stray:
            raise ValueError(f"{what} given for {stray}, which the arena does not run (selected: {', '.join(allowed)})")
    if isinstance(steps, dict):
        steps = {t: v for t, v in steps.items() if t in task_names} or None
    allow_changes = check_allow_changes(allow_changes)
    if set(allow_changes) - {"steps"}:
        raise ValueError(f"an arena resume may change only steps, got {', '.join(allow_changes)}")
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    settings = {
        "schema": SCHEMA,
        "preset": preset,
        "task_preset": PRESETS[preset]["task_preset"],
        "tasks": task_names,
        "mixers": mixer_names,
        "steps": steps,
        "seed": seed,
        "threads": threads,
        "device": device,
        "task_options": task_options,
        "model_options": model_options or {},
        "train_options": train_options or {},
        "mixer_options": mixer_options,
        "tolerance": tolerance,
        "speed": speed,
        "speed_lengths": speed_lengths,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with DirLock(out, "arena"):
        settings = _claim(out, settings, resume, overwrite, allow_changes)
        return _run(out, settings, resume, allow_changes, speed, speed_lengths, speed_options, progress, log)


IDENTITY = (
    "preset",
    "task_preset",
    "tasks",
    "mixers",
    "steps",
    "seed",
    "task_options",
    "model_options",
    "train_options",
    "mixer_options",
    "tolerance",
)


def _claim(out: Path, settings: dict, resume: bool, overwrite: bool, allow_changes) -> dict:
    """Check ``out`` against the arena about to run (lock held) and write its ``arena.json``."""
    if resume and overwrite:
        raise RunDirError(f"resume and overwrite contradict each other (arena {out})")
    clean_temp_files(out)
    stored_path = out / "arena.json"
    present = [p.name for p in (stored_path, out / "runs", out / "speed", out / "leaderboard.json") if p.exists()]
    if resume:
        stored = read_json(stored_path)
        if stored is None:
            raise FileNotFoundError(f"--resume: no readable arena.json in {out}: nothing to resume")
        a, b = jsonable({k: stored.get(k) for k in IDENTITY}), jsonable({k: settings[k] for k in IDENTITY})
        refused = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in IDENTITY if a[k] != b[k] and k not in allow_changes]
        if refused:
            raise RunDirError(
                f"--resume refused: the arena in {out} was started with other settings: "
                + "; ".join(refused)
                + ". Resume with its settings (arguments not given are taken "
                "from arena.json), or start a new arena elsewhere (or --overwrite it)"
                + ("" if "steps" in allow_changes else "; --allow-change steps extends the runs")
            )
        settings = dict(settings, started=stored.get("started", settings["started"]))
        if a["steps"] != b["steps"]:
            settings["resumed"] = list(stored.get("resumed", [])) + [
                {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": [f"steps: {a['steps']!r} -> {b['steps']!r}"]}
            ]
    elif present:
        if not overwrite:
            raise RunDirError(
                f"{out} already holds an arena ({', '.join(present)}); continue it with --resume, "
                "replace it with --overwrite, or choose another --out"
            )
        with storage(out):
            for name in ("runs", "speed"):
                if (out / name).is_dir():
                    shutil.rmtree(out / name)
            for name in ("arena.json", "leaderboard.md", "leaderboard.json", "report.html"):
                (out / name).unlink(missing_ok=True)
    with storage(out / "arena.json"):
        write_json(out / "arena.json", settings)
    return settings


def _run(
    out: Path, settings: dict, resume: bool, allow_changes, speed, speed_lengths, speed_options, progress, log
) -> dict[str, Any]:
    task_names, mixer_names = settings["tasks"], settings["mixers"]
    preset, steps, seed = settings["preset"], settings["steps"], settings["seed"]
    threads, device, tolerance = settings["threads"], settings["device"], settings["tolerance"]
    task_options, mixer_options = settings["task_options"], settings["mixer_options"]
    model_options, train_options = settings["model_options"] or None, settings["train_options"] or None

    t_arena = time.perf_counter()
    for tname in task_names:
        run_dirs = {m: out / "runs" / tname / m for m in mixer_names}
        if resume and all(_finished(d) for d in run_dirs.values()):
            log(f"[{tname}] every run finished or n/a: skipped")
            continue
        try:
            task = task_registry.build(tname, preset=settings["task_preset"], seed=seed, **task_options.get(tname, {}))
        except Exception as e:  # a task that cannot be built fails its runs, not the arena
            for m, d in run_dirs.items():
                if not (resume and _finished(d)):
                    _fresh(d, resume)
                    write_json(
                        d / RUN_RECORD,
                        _record(
                            tname, m, settings, status="error", error=f"task build failed: {type(e).__name__}: {e}"
                        ),
                    )
            log(f"[{tname}] task build failed: {type(e).__name__}: {e}")
            continue
        info = _task_info(task)
        try:
            reference = reference_parameters(task, model_options, mixer_options.get("softmax"))
        except Exception as e:
            reference = None
            log(f"[{tname}] softmax reference model failed ({type(e).__name__}: {e}); no parameter matching")
        for m, d in run_dirs.items():
            if resume and _finished(d):
                log(f"[{tname}/{m}] finished earlier: skipped")
                continue
            _fresh(d, resume)
            rec = _record(tname, m, settings, task_info=info)
            try:
                plan = plan_run(task, m, reference, model_options, mixer_options.get(m), tolerance)
                if plan["status"] == "n/a":
                    write_json(d / RUN_RECORD, rec | {"status": "n/a", "reason": plan["reason"]})
                    log(f"[{tname}/{m}] n/a: {plan['reason']}")
                    continue
                torch.manual_seed(seed)
                model = build_model(task, m, **plan["overrides"])
                why = _max_len_reason(model, task.meta.seq_len)
                if why:
                    write_json(d / RUN_RECORD, rec | {"status": "n/a", "reason": why})
                    log(f"[{tname}/{m}] n/a: {why}")
                    continue
                cfg = _train_config(task, steps, seed, threads, device, train_options)
                cfg.progress = progress
                previous = read_json(d / RUN_RECORD) or {}
                resuming = resume and (d / "checkpoint.pt").exists()
                rec |= {
                    "status": "running",
                    "overrides": plan["overrides"],
                    "budget": plan["budget"],
                    "num_parameters": model.num_parameters(),
                    "train": _jsonable(vars(cfg)),
                }
                write_json(d / RUN_RECORD, rec)
                b = plan["budget"]
                log(
                    f"[{tname}/{m}] {'resuming' if resuming else 'training'} {cfg.steps} steps, "
                    f"{model.num_parameters():,} parameters"
                    + (f" ({b['ratio']:.3f} x softmax; {b['adjustment']})" if b else "")
                )
                t0 = time.perf_counter()
                final = train(
                    model,
                    task,
                    cfg,
                    d,
                    resume=resuming,
                    run_config={"arena": {"task": tname, "mixer": m, "preset": preset, "overrides": plan["overrides"]}},
                    # the evaluation / checkpoint cadence follows the step count (_train_config)
                    allow_changes=(*allow_changes, "eval_every", "checkpoint_every")
                    if resuming and allow_changes
                    else (),
                )
                dt = time.perf_counter() - t0
                rec |= {
                    "status": "done",
                    "train_s": round(previous.get("train_s", 0.0) + dt, 2),
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                }
                write_json(d / RUN_RECORD, rec)
                metric = info["metric"]
                log(
                    f"[{tname}/{m}] test {metric} {final['test'].get(metric, final['test']['accuracy']):.4f} "
                    f"({dt:.0f} s)"
                )
            except Exception as e:
                rec |= {
                    "status": "error",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc(limit=-4),
                }
                write_json(d / RUN_RECORD, rec)
                log(f"[{tname}/{m}] error: {type(e).__name__}: {e}")
            finally:
                model = None
                gc.collect()
        del task
        gc.collect()

    if speed:
        err = _speed(
            out,
            settings,
            mixer_names,
            task_names,
            speed_lengths or PRESETS[preset]["speed_lengths"],
            threads,
            device,
            mixer_options,
            speed_options,
            resume,
            log,
        )
        if err:
            settings["speed_error"] = err
    settings["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    settings["wall_s"] = round(time.perf_counter() - t_arena, 1)
    write_json(out / "arena.json", settings)
    return write_report(out)


def failures(out: str | Path, leaderboard: dict | None = None) -> list[str]:
    """``TASK/MIXER: error`` for every run of the arena in ``out`` that failed (and the benchmark, if it did)."""
    lb = leaderboard if leaderboard is not None else write_report(out)
    bad = [
        f"{r['task']}/{r['mixer']}: {r['status']}" + (f": {r['error']}" if r.get("error") else "")
        for r in lb["runs"]
        if r["status"] in ("error", "unfinished", "running")
    ]
    err = (read_json(Path(out) / "arena.json") or {}).get("speed_error")
    return bad + ([f"speed benchmark: {err}"] if err else [])


def stored_settings(out: str | Path) -> dict | None:
    """The settings an arena in ``out`` was started with (``arena.json``), or None."""
    return read_json(Path(out) / "arena.json")


def _finished(run_dir: Path) -> bool:
    """A run the arena need not repeat: it has final.json, or it was found not applicable."""
    if (run_dir / "final.json").exists():
        return True
    rec = read_json(run_dir / RUN_RECORD)
    return bool(rec) and rec.get("status") == "n/a"


def _fresh(run_dir: Path, resume: bool) -> None:
    """A run that does not continue from a checkpoint starts from an empty directory (the trainer
    appends to metrics.jsonl)."""
    if run_dir.exists() and not (resume and (run_dir / "checkpoint.pt").exists()):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _record(task: str, mixer: str, settings: dict, **fields) -> dict:
    return {
        "schema": SCHEMA + "/run",
        "task": task,
        "mixer": mixer,
        "preset": settings["preset"],
        "seed": settings["seed"],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **fields,
    }


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


# ---------------------------------------------------------------------------- speed
def speed_config_for(width: dict, lengths, threads, device, options: dict | None = None):
    """The arena's :class:`longseq.bench.SpeedConfig`: ``width`` = ``{"d_model", "heads"}``,
    3 timed repeats, 10 s per call at most; ``options`` override any field."""
    d = {
        "lengths": list(lengths),
        "threads": threads,
        "device": device,
        "repeats": 3,
        "warmup": 1,
        "time_budget": 10.0,
        **(width or {}),
        **(options or {}),
    }
    return SpeedConfig(**d)


def _speed(
    out: Path, settings, mixer_names, task_names, lengths, threads, device, mixer_options, options, resume, log
) -> str | None:
    """Speed and memory of the arena's mixers (``longseq.bench.run_speed``) into ``out/speed``."""

    dest = out / "speed"
    if resume and (dest / "results.json").exists():
        log("[speed] results exist: skipped")
        return None
    width = _speed_width(out, task_names)
    cfg = speed_config_for(width, lengths, threads, device, options)
    log(f"[speed] bench: {', '.join(mixer_names)} at L = {cfg.lengths} (d_model {cfg.d_model}, {cfg.heads} heads)")
    opts = {m: mixer_options[m] for m in mixer_names if m in mixer_options}
    try:
        res = run_speed(mixer_names, cfg, options=opts, log=lambda s: log("[speed]" + s))
        write_bench(res, str(dest))
    except Exception as e:  # the leaderboard does not depend on the benchmark
        log(f"[speed] failed: {type(e).__name__}: {e}")
        return f"{type(e).__name__}: {e}"
    return None


def _speed_width(out: Path, task_names: list[str]) -> dict:
    """d_model and heads of the softmax model of the longest task the arena trained."""
    best = None
    for t in task_names:
        cfg = read_json(out / "runs" / t / "softmax" / "config.json")
        rec = read_json(out / "runs" / t / "softmax" / RUN_RECORD) or {}
        L = (rec.get("task_info") or {}).get("seq_len", 0)
        if cfg and (best is None or L > best[0]):
            best = (L, cfg["model"])
    if best is None:
        return {}
    d, h = int(best[1].get("d_model", 256)), int(best[1].get("num_heads", 1))
    return {"d_model": d, "heads": h}
