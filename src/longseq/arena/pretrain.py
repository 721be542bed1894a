"""``longseq arena --protocol pretrain-finetune``: does MLM pre-training help at equal total steps?

For every seed and every selected bidirectional mixer:

1. **pre-train** a :class:`~longseq.models.MaskedLM` on an MLM task (``mlm_code`` by default:
   the one corpus every machine has) for ``pretrain_steps`` steps, every model matched to the
   softmax MaskedLM's parameter count (:func:`longseq.arena.budget.match_budget`, as the
   standard arena does);
2. for every selected classification task, **fine-tune** the pre-trained encoder
   (:func:`longseq.train.finetune_model`: new head, optional layer-wise lr decay / frozen
   embeddings) for ``finetune_steps`` steps, and train the **same architecture from scratch**
   for ``pretrain_steps + finetune_steps`` steps (the same total number of steps: the
   pre-training papers' claim is that pre-training helps at equal compute).

The leaderboard puts both test accuracies side by side (mean over seeds, and each seed), with the
MLM's masked-token accuracy and bits per masked byte; the pre-training curves (validation masked
bpb per evaluation) are in ``pretrain_finetune.json`` and, with matplotlib, ``pretrain_curves.png``.

Layout of ``out``::

    pretrain_finetune.json / .md      settings, results, curves (rebuilt by write_pf_report)
    pretrain/SEED/MIXER/              the MLM run dir (checkpointed, resumable)
    runs/TASK/MIXER/SEED/finetune/    fine-tuning run dir (init_report.json: the load report)
    runs/TASK/MIXER/SEED/scratch/     from-scratch run dir

Mixer names are registry names or the variant ``deberta`` (softmax layers with DeBERTa's
disentangled relative positions, ``position="deberta"``). Causal-only mixers are ``n/a`` (an MLM
needs both sides). Length options (``max_len``) are set to the longest of the MLM and
classification lengths, so fixed-length mixers (Linformer) read every task. ``resume=True`` skips
finished stages and continues interrupted ones from their checkpoints.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .budget import TOLERANCE, match_budget
from .runner import _log_default, _train_config, read_json, write_json

SCHEMA = "longseq.arena.pretrain_finetune/1"
VARIANTS: dict[str, tuple[str, dict]] = {"deberta": ("softmax", {"position": "deberta"})}
DEFAULT_MIXERS = ["softmax", "deberta", "linformer", "bigbird", "grn", "s4d"]


def resolve_variant(name: str) -> tuple[str, dict]:
    from .. import mixers

    if name in VARIANTS:
        return VARIANTS[name]
    mixers.spec(name)  # ValueError listing the registered names
    return name, {}


def _finished(d: Path) -> bool:
    return (d / "final.json").exists()


def _fresh(d: Path, resume: bool) -> None:
    """A stage that does not continue from its checkpoint starts from an empty run dir (the
    trainer appends to metrics.jsonl)."""
    if d.exists() and not (resume and (d / "checkpoint.pt").exists()):
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)


def _curve(path: Path, key: str) -> list[list[float]]:
    pts = []
    try:
        for ln in path.read_text().splitlines():
            r = json.loads(ln)
            if r.get("split") == "validation" and key in r:
                pts.append([r["step"], r[key]])
    except (OSError, ValueError):
        pass
    return pts


def run_pretrain_finetune(
    mixers: list[str] | str | None = None,
    tasks: list[str] | str = ("text", "retrieval"),
    out: str | Path = "runs/pretrain_finetune",
    *,
    pretrain_task: str = "mlm_code",
    preset: str = "quick",
    pretrain_steps: int = 600,
    finetune_steps: int = 300,
    seeds: list[int] | tuple[int, ...] = (0,),
    threads: int | None = None,
    device: str = "auto",
    task_options: dict[str, dict] | None = None,
    model_options: dict | None = None,
    train_options: dict | None = None,
    mixer_options: dict[str, dict] | None = None,
    tolerance: float = TOLERANCE,
    layer_lr_decay: float | None = None,
    freeze_embeddings: bool = False,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol (see the module docstring); returns what ``pretrain_finetune.json`` holds."""
    from .. import mixers as registry
    from .. import tasks as task_registry
    from ..models.finetune import classifier_like
    from ..train import build_model, finetune_model, train
    from .runner import mixer_options_for, resolve_tasks

    log = log or _log_default
    names = (
        DEFAULT_MIXERS
        if mixers in (None, "default")
        else (mixers.split(",") if isinstance(mixers, str) else list(mixers))
    )
    names = [n.strip() for n in names if n.strip()]
    for n in names:
        resolve_variant(n)
    task_names = resolve_tasks(tasks)
    for s in (pretrain_steps, finetune_steps):
        if not isinstance(s, int) or s < 1:
            raise ValueError(f"pretrain_steps and finetune_steps must be positive ints, got {s!r}")
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    task_options, mixer_options = dict(task_options or {}), dict(mixer_options or {})
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "schema": SCHEMA,
        "preset": preset,
        "pretrain_task": pretrain_task,
        "tasks": task_names,
        "mixers": names,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": finetune_steps,
        "seeds": list(seeds),
        "task_options": task_options,
        "model_options": model_options or {},
        "train_options": train_options or {},
        "mixer_options": mixer_options,
        "tolerance": tolerance,
        "layer_lr_decay": layer_lr_decay,
        "freeze_embeddings": freeze_embeddings,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(out / "settings.json", settings)

    for seed in seeds:
        mlm = task_registry.build(pretrain_task, preset=preset, seed=seed, **task_options.get(pretrain_task, {}))
        if mlm.meta.kind != "mlm":
            raise ValueError(
                f"pretrain_task {pretrain_task!r} is of kind {mlm.meta.kind!r}; use an MLM task "
                f"(mlm_code, mlm_text, mlm_dict)"
            )
        cls_tasks = {t: task_registry.build(t, preset=preset, seed=seed, **task_options.get(t, {})) for t in task_names}
        for t, task in cls_tasks.items():
            if task.meta.kind != "classification":
                raise ValueError(f"task {t!r} is of kind {task.meta.kind!r}: fine-tuning needs classification tasks")
        longest = max([mlm.meta.seq_len] + [t.meta.seq_len for t in cls_tasks.values()])

        def overrides_for(name: str) -> tuple[str, dict]:
            mixer, extra = resolve_variant(name)
            opts = mixer_options_for(mlm, mixer, mixer_options.get(name))
            for k in ("max_len",):
                if k in opts and k not in (mixer_options.get(name) or {}):
                    opts[k] = longest
            over = {**(model_options or {}), **extra}
            if opts:
                over["mixer_options"] = opts
            if over.get("position") in ("learned", "deberta", "diet_abs", "diet_rel") and not over.get("max_len"):
                over["max_len"] = longest
            return mixer, over

        ref_mixer, ref_over = overrides_for("softmax")
        from .budget import count_parameters

        reference = count_parameters(mlm, ref_mixer, ref_over)[0]
        for name in names:
            mixer, over = overrides_for(name)
            pdir = out / "pretrain" / str(seed) / name
            if not registry.spec(mixer).bidirectional:
                write_json(pdir / "arena.json", {"status": "n/a", "reason": "causal only: an MLM needs both sides"})
                log(f"[pretrain/{name}/seed {seed}] n/a: causal only")
                continue
            try:
                budget = match_budget(mlm, mixer, reference, over, tolerance)
                over = budget.pop("overrides")
                if not (resume and _finished(pdir)):
                    _fresh(pdir, resume)
                    torch.manual_seed(seed)
                    model = build_model(mlm, mixer, **over)
                    cfg = _train_config(mlm, pretrain_steps, seed, threads, device, train_options)
                    cfg.progress = progress
                    resuming = resume and (pdir / "checkpoint.pt").exists()
                    log(
                        f"[pretrain/{name}/seed {seed}] {pretrain_steps} steps on {pretrain_task}, "
                        f"{model.num_parameters():,} parameters ({budget['ratio']:.3f} x softmax)"
                    )
                    t0 = time.perf_counter()
                    train(
                        model,
                        mlm,
                        cfg,
                        pdir,
                        resume=resuming,
                        run_config={"pretrain_finetune": {"mixer": name, "overrides": over, "budget": budget}},
                    )
                    write_json(
                        pdir / "arena.json",
                        {
                            "status": "done",
                            "budget": budget,
                            "overrides": over,
                            "train_s": round(time.perf_counter() - t0, 1),
                        },
                    )
                    del model
            except Exception as e:
                write_json(
                    pdir / "arena.json",
                    {
                        "status": "error",
                        "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc(limit=-4),
                    },
                )
                log(f"[pretrain/{name}/seed {seed}] error: {type(e).__name__}: {e}")
                continue
            for tname, task in cls_tasks.items():
                base = out / "runs" / tname / name / str(seed)
                for stage in ("finetune", "scratch"):
                    d = base / stage
                    if resume and _finished(d):
                        continue
                    try:
                        steps = finetune_steps if stage == "finetune" else pretrain_steps + finetune_steps
                        _fresh(d, resume)
                        torch.manual_seed(seed)
                        if stage == "finetune":
                            model, report = finetune_model(
                                task, pdir, layer_lr_decay=layer_lr_decay, freeze_embeddings=freeze_embeddings
                            )
                            write_json(d / "init_report.json", report.to_dict())
                        else:  # the same architecture (vocabulary included), freshly initialised
                            model = classifier_like(
                                read_mlm(pdir),
                                task.meta.num_classes,
                                pooling=task.model_defaults.get("pooling", "mean"),
                                pair=bool(task.meta.extra.get("pair", False)),
                            )
                        cfg = _train_config(task, steps, seed, threads, device, train_options)
                        cfg.progress = progress
                        log(f"[{tname}/{name}/seed {seed}] {stage}: {steps} steps")
                        final = train(
                            model,
                            task,
                            cfg,
                            d,
                            resume=resume and (d / "checkpoint.pt").exists(),
                            run_config={"pretrain_finetune": {"mixer": name, "stage": stage, "pretrained": str(pdir)}},
                        )
                        log(f"[{tname}/{name}/seed {seed}] {stage}: test accuracy {final['test']['accuracy']:.4f}")
                    except Exception as e:
                        write_json(
                            d / "error.json",
                            {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=-4)},
                        )
                        log(f"[{tname}/{name}/seed {seed}] {stage} error: {type(e).__name__}: {e}")
                    finally:
                        model = None
                        gc.collect()
    settings["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(out / "settings.json", settings)
    return write_pf_report(out)


_MLM_CACHE: dict[str, Any] = {}


def read_mlm(pdir: Path):
    from ..models import load

    key = str(pdir)
    if key not in _MLM_CACHE:
        _MLM_CACHE.clear()
        _MLM_CACHE[key] = load(pdir / "model")
    return _MLM_CACHE[key]


def _test_acc(d: Path) -> float | None:
    f = read_json(d / "final.json")
    return None if not f else f["test"]["accuracy"]


def collect_pf(out: str | Path) -> dict[str, Any]:
    out = Path(out)
    settings = read_json(out / "settings.json") or {}
    names, tasks, seeds = settings.get("mixers", []), settings.get("tasks", []), settings.get("seeds", [])
    pre, rows = {}, []
    for name in names:
        per_seed = {}
        for s in seeds:
            pdir = out / "pretrain" / str(s) / name
            f = read_json(pdir / "final.json")
            rec = read_json(pdir / "arena.json") or {}
            per_seed[str(s)] = {
                "status": rec.get("status", "missing"),
                "reason": rec.get("reason") or rec.get("error"),
                "num_parameters": (f or {}).get("num_parameters"),
                "masked_accuracy": (f or {}).get("test", {}).get("accuracy"),
                "masked_bpb": (f or {}).get("test", {}).get("masked_bpb"),
                "curve": _curve(pdir / "metrics.jsonl", "masked_bpb"),
                "budget": rec.get("budget"),
                "train_s": rec.get("train_s"),
            }
        pre[name] = per_seed
        for t in tasks:
            ft = {str(s): _test_acc(out / "runs" / t / name / str(s) / "finetune") for s in seeds}
            sc = {str(s): _test_acc(out / "runs" / t / name / str(s) / "scratch") for s in seeds}
            rows.append({"mixer": name, "task": t, "finetune": ft, "scratch": sc})
    return {"schema": SCHEMA, "settings": settings, "pretrain": pre, "results": rows}


def _mean(vals) -> float | None:
    v = [x for x in vals if x is not None]
    return sum(v) / len(v) if v else None


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def format_pf_markdown(lb: dict) -> str:
    s = lb["settings"]
    lines = [
        f"# Pre-train then fine-tune ({s.get('pretrain_task')} -> {', '.join(s.get('tasks', []))})",
        "",
        f"Preset {s.get('preset')}; pre-training {s.get('pretrain_steps')} steps, fine-tuning "
        f"{s.get('finetune_steps')} steps; from scratch {s.get('pretrain_steps', 0) + s.get('finetune_steps', 0)} "
        f"steps (equal total steps); seeds {s.get('seeds')}; layer-wise lr decay {s.get('layer_lr_decay')}; "
        f"frozen embeddings {s.get('freeze_embeddings')}. Test accuracy in % (mean over seeds; per seed in "
        f"brackets).",
        "",
        "## MLM pre-training (test split)",
        "",
        "| mixer | parameters (x softmax) | masked-token accuracy % | bits per masked byte |",
        "|---|---|---|---|",
    ]
    for name, per in lb["pretrain"].items():
        acc = [v["masked_accuracy"] for v in per.values()]
        bud = next((v.get("budget") for v in per.values() if v.get("budget")), None)
        bpb = [v["masked_bpb"] for v in per.values()]
        n = next((v["num_parameters"] for v in per.values() if v["num_parameters"]), None)
        why = next(
            (f"{v['status']}: {v['reason']}" for v in per.values() if v["status"] not in ("done", "missing")), None
        )
        b = _mean(bpb)
        ratio = "" if not bud else (f" ({bud['ratio']:.2f}" + ("" if bud.get("within") else ", over budget") + ")")
        lines.append(
            f"| {name} | {n if n else '—'}{ratio} | {_pct(_mean(acc))} | {'—' if b is None else f'{b:.3f}'}"
            + (f" ({why})" if why else "")
            + " |"
        )
    lines += [
        "",
        "## Fine-tuned vs from scratch (test accuracy %)",
        "",
        "| task | mixer | from scratch | fine-tuned | difference |",
        "|---|---|---|---|---|",
    ]
    for r in lb["results"]:
        sc, ft = _mean(r["scratch"].values()), _mean(r["finetune"].values())
        per = lambda d: ", ".join(_pct(v) for v in d.values())  # noqa: E731
        diff = "—" if sc is None or ft is None else f"{100 * (ft - sc):+.1f}"
        lines.append(
            f"| {r['task']} | {r['mixer']} | {_pct(sc)} [{per(r['scratch'])}] | {_pct(ft)} "
            f"[{per(r['finetune'])}] | {diff} |"
        )
    return "\n".join(lines) + "\n"


def plot_pf_curves(lb: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per in lb["pretrain"].items():
        for s, v in per.items():
            if v["curve"]:
                xs, ys = zip(*v["curve"])
                ax.plot(xs, ys, label=f"{name} (seed {s})")
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("validation bits per masked byte")
    ax.legend(fontsize=7)
    fig.tight_layout()
    from ..models.base import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return True


def write_pf_report(out: str | Path) -> dict[str, Any]:
    """Rebuild ``pretrain_finetune.json``/``.md`` (and the curves' PNG) from the run dirs."""
    from ..models.base import atomic_write

    out = Path(out)
    lb = collect_pf(out)
    write_json(out / "pretrain_finetune.json", lb)
    atomic_write(out / "pretrain_finetune.md", lambda tmp: Path(tmp).write_text(format_pf_markdown(lb)))
    plot_pf_curves(lb, out / "pretrain_curves.png")
    return lb
