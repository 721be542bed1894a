"""A plain PyTorch training loop: AdamW with parameter groups (or SGD, or SIBERT's ``sgd_si``:
:mod:`longseq.train.sgd_si`), warmup + cosine schedule, clipping,
accumulation, periodic evaluation, JSON-lines metrics, atomic checkpoints and exact resume.

Reproducibility: the batch drawn at every (step, micro-batch) is a pure function of the seed
(an epoch-seeded permutation indexed by a global sample counter), and a checkpoint holds the
model, optimiser, schedule and RNG states; so ``resume`` continues with the very same losses as
an uninterrupted run (bit-exact on CPU).

Several processes: under ``torchrun`` every rank calls :func:`train` with the same arguments and
the run becomes data parallel (DDP, or FSDP with ``fsdp=True``): each rank takes its slice of the
same global batches, losses are normalised over the global batch, evaluation sums are
all-reduced, and rank 0 alone writes the run directory with plain (unwrapped) state dicts, so a
checkpoint resumes under any number of processes. See :mod:`longseq.train.distributed`.

Run directory layout (``out_dir``)::

    config.json      task, model and trainer configuration
    metrics.jsonl    one JSON object per logged train step / evaluation
    checkpoint.pt    latest checkpoint (tensors and plain data only; loaded with weights_only=True)
    model/           the final model (``longseq.load`` reads it)
    final.json       final validation and test metrics
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import LongseqModel
from ..tasks.base import IGNORE, Split, Task
from . import rundir
from .distributed import (
    DistContext,
    all_reduce_sum,
    full_model_state,
    full_optimizer_state,
    global_mean,
    grad_norm_value,
    grad_sync,
    load_optimizer_state,
    rank_batch,
    rank_seed,
    restore_rng,
    rng_states,
    save_model,
    setup,
    shard,
    teardown,
    unwrap,
    world_size,
    wrap,
)
from .sgd_si import build_optimizer, check_optimizer

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    grad_accum: int = 1  # micro-batches per step (batch_size is per micro-batch)
    eval_every: int = 250
    eval_batch_size: int = 128
    eval_max_batches: int | None = None  # cap evaluation cost on large splits (None = whole split)
    log_every: int = 10
    checkpoint_every: int = 250
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    fsdp: bool = False  # several processes: shard model/optimizer with FSDP instead of DDP
    dist_timeout: float = 300.0  # several processes: seconds a rank waits for its peers before failing
    optimizer: str = "adamw"  # adamw | sgd | sgd_si (SIBERT's SGD + WD + clipping: train/sgd_si.py)
    si_clip: float | None = 2.0  # sgd_si: clip the gradient norm at si_clip * sqrt(2 wd / lr) * ||W||
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown trainer setting(s) {unknown}; settings: {', '.join(sorted(known))}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)

    def validate(self) -> None:
        check_settings(asdict(self))
        if self.dist_timeout <= 0:
            raise ValueError(f"dist_timeout must be positive (seconds), got {self.dist_timeout}")
        check_optimizer(self.optimizer, self.si_clip, self.fsdp)


_POSITIVE_INT = ("steps", "batch_size", "grad_accum", "eval_every", "log_every", "checkpoint_every", "eval_batch_size")


def check_settings(d: dict) -> None:
    """Check the trainer settings present in ``d`` (a partial dict is fine: the CLI checks the flags the
    user gave before any work starts); ``ValueError`` naming the setting and what is allowed."""

    def num(k, v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for k in _POSITIVE_INT:
        if k in d and not (isinstance(d[k], int) and not isinstance(d[k], bool) and d[k] > 0):
            raise ValueError(f"trainer setting {k} must be a positive integer, got {d[k]!r}")
    for k in ("threads", "eval_max_batches"):
        if d.get(k) is not None and not (isinstance(d[k], int) and not isinstance(d[k], bool) and d[k] > 0):
            raise ValueError(f"trainer setting {k} must be a positive integer (or unset), got {d[k]!r}")
    if "warmup" in d and not (isinstance(d["warmup"], int) and not isinstance(d["warmup"], bool) and d["warmup"] >= 0):
        raise ValueError(f"trainer setting warmup must be an integer >= 0, got {d['warmup']!r}")
    if "lr" in d and not (num("lr", d["lr"]) and d["lr"] > 0):
        raise ValueError(f"learning rate (lr) must be a finite number > 0, got {d['lr']!r}")
    if "weight_decay" in d and not (num("weight_decay", d["weight_decay"]) and d["weight_decay"] >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {d['weight_decay']!r}")
    if d.get("grad_clip") is not None and not (num("grad_clip", d["grad_clip"]) and d["grad_clip"] >= 0):
        raise ValueError(f"grad_clip must be a finite number >= 0 (0 or unset: no clipping), got {d['grad_clip']!r}")
    if "min_lr_ratio" in d and not (num("min_lr_ratio", d["min_lr_ratio"]) and 0 <= d["min_lr_ratio"] <= 1):
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {d['min_lr_ratio']!r}")
    if "betas" in d and not (len(d["betas"]) == 2 and all(num("betas", b) and 0 <= b < 1 for b in d["betas"])):
        raise ValueError(f"betas must be two numbers in [0, 1), got {d['betas']!r}")
    if d.get("si_clip") is not None and not (num("si_clip", d["si_clip"]) and d["si_clip"] >= 0):
        raise ValueError(f"si_clip must be a finite number >= 0, got {d['si_clip']!r}")
    for k in ("progress", "fsdp"):
        if k in d and not isinstance(d[k], bool):
            raise ValueError(f"trainer setting {k} must be true or false, got {d[k]!r}")
    if "device" in d:
        resolve_device(d["device"])


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available, else CPU) or a torch device string; ``ValueError`` for an unknown or
    unavailable device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {name!r} ({e}); use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {name!r} is not available: torch sees no CUDA device here; use auto or cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {name!r} is not available: {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} is not available here; use auto or cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        mod = getattr(torch, dev.type, None)
        if mod is None or not getattr(mod, "is_available", lambda: False)():
            raise ValueError(f"device {name!r} is not available here; use auto, cpu or cuda")
    return dev


def lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def batch_indices(n: int, batch_size: int, counter: int, seed: int) -> torch.Tensor:
    """Indices of the batch starting at global sample ``counter``: epoch-seeded permutations laid
    end to end, so the data order is a pure function of (seed, counter)."""
    out, taken = [], 0
    while taken < batch_size:
        epoch, pos = divmod(counter + taken, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        chunk = perm[pos : pos + batch_size - taken]
        out.append(chunk)
        taken += len(chunk)
    return torch.cat(out)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_model(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch["inputs"], batch.get("mask"))
    return logits, model.loss(logits, batch["targets"])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int = 128,
    max_batches: int | None = None,
    device=None,
    metric: str = "accuracy",
    *,
    ctx: DistContext | None = None,
) -> dict[str, float]:
    """Loss and accuracy summed over examples (LM: over target tokens), not averaged per batch.
    Regression tasks (float targets, metric ``rel_l2``): the model's per-sample loss averaged over
    examples, reported as ``loss`` and ``rel_l2``, without accuracy.

    With the ``ctx`` of a multi-process run (every rank calls it), rank r evaluates batches
    r, r + world, ... and the sums and counts are all-reduced: every rank returns the global result."""
    ctx = ctx or DistContext()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, count, bound_sum = 0.0, 0, 0, 0.0
    nll = getattr(split, "nll", None)  # CFL tasks: each string's exact -log p(w) (tasks/cfl.py)
    n_batches = math.ceil(len(split) / batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    own: list[int | None] = list(range(ctx.rank, n_batches, ctx.world))
    if ctx.active and ctx.fsdp:  # each forward all-gathers parameters: every rank runs as many
        own += [None] * (math.ceil(n_batches / ctx.world) - len(own))
    for b in own:
        if b is None:  # a filler forward on the first batch, not counted
            run_model(model, _to(split.batch(torch.arange(min(batch_size, len(split)))), device))
            continue
        idx = torch.arange(b * batch_size, min(len(split), (b + 1) * batch_size))
        batch = _to(split.batch(idx), device)
        logits, _ = run_model(model, batch)
        t = batch["targets"]
        if t.is_floating_point():  # regression (operator tasks): the model's mean loss per sample
            n = t.shape[0]
            lp = model.loss(logits, t).float() * n
        elif logits.dim() == 3:  # LM: [B, L, V] against [B, L]
            keep = t != IGNORE
            n = int(keep.sum())
            lp = torch.nn.functional.cross_entropy(
                logits.float().flatten(0, 1), t.flatten(), ignore_index=IGNORE, reduction="sum"
            )
            correct += int(((logits.argmax(-1) == t) & keep).sum())
        else:
            n = t.shape[0]
            lp = torch.nn.functional.cross_entropy(logits.float(), t, reduction="sum")
            correct += int((logits.argmax(-1) == t).sum())
        loss_sum += float(lp)
        count += n
        if nll is not None:
            bound_sum += float(nll[idx].sum())
    if ctx.active:
        loss_sum, correct, count, bound_sum = all_reduce_sum([loss_sum, correct, count, bound_sum], ctx, device)
        correct, count = int(correct), int(count)
    model.train(was_training)
    out = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count}
    if metric == "rel_l2":  # regression: the loss is the relative L2 error; no accuracy
        del out["accuracy"]
        out["rel_l2"] = out["loss"]
    if metric in ("bpb", "masked_bpb"):  # bits per (masked, for kind "mlm") byte
        out[metric] = out["loss"] / math.log(2)
    if metric == "ce_gap" and nll is not None:  # cross-entropy minus the exact lower bound (nats/symbol)
        out["lower_bound"] = bound_sum / max(count, 1)
        out["ce_gap"] = out["loss"] - out["lower_bound"]
    return out


def _save_checkpoint(
    path: Path,
    model,
    opt,
    sched,
    step: int,
    cfg: TrainConfig,
    *,
    pending: dict | None = None,
    identity: dict | None = None,
) -> None:
    """Write the checkpoint of ``model`` (possibly DDP-wrapped or FSDP-sharded: then every rank
    calls this, the state is gathered and rank 0 writes plain state dicts plus every rank's RNG).
    ``pending``: train losses of steps not yet logged (a checkpoint between two log records, e.g. on
    Ctrl-C); ``identity``: the run's resolved configuration (``config.json``), checked on resume.
    The file carries the sha256 of its content (:func:`longseq.train.rundir.save_checkpoint`)."""
    model_state, opt_state, rng_ranks = full_model_state(model), full_optimizer_state(model, opt), rng_states()
    if model_state is None:  # not rank 0
        return
    ckpt = {
        "step": step,
        "model": model_state,
        "optimizer": opt_state,
        "scheduler": sched.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "config": asdict(cfg),
    }
    if rng_ranks is not None:
        ckpt["rng_ranks"] = rng_ranks
    if pending:
        ckpt["pending"] = pending
    if identity is not None:
        ckpt["identity"] = json.dumps(identity, sort_keys=True, default=str)
    rundir.save_checkpoint(path, ckpt)


load_checkpoint = rundir.load_checkpoint


class _Metrics:
    def __init__(self, path: Path | None):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again); a last line
        cut by a kill is repaired with a warning (:func:`longseq.train.rundir.read_metrics`)."""
        if self.path is None or not self.path.exists():
            return
        keep = [
            r
            for r in rundir.read_metrics(self.path, repair=False)  # test records: the run's end only
            if r["step"] <= step and r.get("split") != "test"
        ]
        rundir.write_metrics(self.path, keep)

    def log(self, record: dict) -> None:
        if self.path is not None:
            with rundir.storage(self.path), open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: the run stopped after a whole step, with a final checkpoint."""


class _StopOnSigint:
    """While active, the first SIGINT only asks the loop to stop after the current step (it then
    writes a checkpoint and raises :class:`TrainingInterrupted`); a second one interrupts at once.
    Installed only in the main thread of a single process (ranks of a process group would stop at
    different steps)."""

    def __init__(self, enabled: bool):
        import signal
        import threading

        self.requested = False
        self.previous = None
        self._signal = signal
        if enabled and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            self.restore()
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self.previous is not None:
            self._signal.signal(self._signal.SIGINT, self.previous)
            self.previous = None


def _identity(task: Task, model: nn.Module, cfg: TrainConfig, run_config: dict | None, ctx: DistContext) -> dict:
    """The run's resolved configuration: task (with the meta and a fingerprint of each split's data),
    model config, trainer config, what the caller adds (CLI or arena settings), code version."""
    m = task.meta
    data = {}
    for name, split in task.splits().items():
        try:
            data[name] = split.fingerprint()
        except Exception:  # lazily generated splits without stored tensors
            pass
    record = {
        "task": {
            "name": m.name,
            "preset": m.preset,
            "seed": m.seed,
            "kind": m.kind,
            "vocab_size": m.vocab_size,
            "seq_len": m.seq_len,
            "num_classes": m.num_classes,
            "data": data,
        },
        "model": {"class": type(model).__name__, **getattr(model, "config", {})},
        "train": asdict(cfg),
        **(run_config or {}),
        "code_version": rundir.code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if ctx.active:
        record["distributed"] = {"world_size": ctx.world, "strategy": "fsdp" if ctx.fsdp else "ddp"}
    return rundir.jsonable(record)


def _check_resume(out: Path, stored: dict | None, ckpt: dict | None, current: dict, allow_changes) -> dict:
    """Compare the current settings with the run's ``config.json`` and the checkpoint's own record;
    refuse differences (listed) except ``allow_changes``; return the identity to keep."""
    problems = []
    for where, rec in (
        (out / rundir.CONFIG, stored),
        (out / CHECKPOINT, json.loads(ckpt["identity"]) if ckpt and "identity" in ckpt else None),
    ):
        if rec is None:
            continue
        refused, _ = rundir.identity_diff(rec, current, allow_changes)
        if refused:
            problems.append(f"{where} differs from this command in: " + "; ".join(refused))
    if problems:
        raise rundir.RunDirError(
            f"--resume refused: the run in {out} was made with other settings. "
            + " ".join(problems)
            + f". Resume with the run's settings, or start a new run elsewhere (or --overwrite it); "
            f"settings a resume may change with --allow-change: {', '.join(rundir.CHANGEABLE)}"
        )
    if stored is None:
        return current
    if stored.get("code_version") != current["code_version"]:
        warnings.warn(
            f"{out}: the run was made with longseq {stored.get('code_version')}, this is {current['code_version']}",
            RuntimeWarning,
            stacklevel=3,
        )
    _, allowed = rundir.identity_diff(stored, current, allow_changes)
    if not allowed:
        return stored
    kept = dict(stored, train=current["train"])
    kept["resumed"] = list(stored.get("resumed", [])) + [{"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": allowed}]
    return kept


def train(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    run_config: dict | None = None,
    *,
    overwrite: bool = False,
    allow_changes: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """Train ``model`` on ``task``; returns the final metrics (validation and test).

    Under ``torchrun`` (or in a process group the caller initialised) every rank calls this with
    the same arguments; ``cfg.batch_size`` stays the global batch. With ``cfg.fsdp`` the model is
    sharded in place and stays so: read the trained model back from ``out_dir/model``.

    ``out_dir`` belongs to one run (:mod:`longseq.train.rundir`): it is locked while training; a new
    run into a directory holding another run's files is refused unless ``overwrite``; ``resume``
    checks the checkpoint's checksum and refuses settings that differ from the run's ``config.json``
    except the trainer settings named in ``allow_changes`` (``rundir.CHANGEABLE``). Ctrl-C (single
    process) stops after the current step with a checkpoint and raises :class:`TrainingInterrupted`."""
    cfg.validate()
    allow_changes = rundir.check_allow_changes(allow_changes)
    rank_batch(cfg.batch_size, world_size())  # a clear error before any process group is joined
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        rundir.check_out_dir(out, resume=resume, overwrite=overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx, device = setup(resolve_device(cfg.device), fsdp=cfg.fsdp, timeout_s=cfg.dist_timeout)
    lock = rundir.DirLock(out) if out is not None and ctx.is_main else None
    if lock is not None:
        lock.acquire()
    stop = _StopOnSigint(enabled=not ctx.active)
    try:
        return _train(model, task, cfg, out, resume, run_config, overwrite, allow_changes, ctx, device, stop)
    finally:
        stop.restore()
        if lock is not None:
            lock.release()


def _train(model, task, cfg, out, resume, run_config, overwrite, allow_changes, ctx, device, stop) -> dict[str, Any]:
    identity = _identity(task, model, cfg, run_config, ctx)
    ckpt = None
    if out is not None and ctx.is_main:
        rundir.clean_temp_files(out)
        if overwrite:
            rundir.clear_run(out)
    if resume:
        stored = rundir.read_identity(out) if out is not None else None
        if out is None or (stored is None and not (out / CHECKPOINT).exists()):
            raise FileNotFoundError(f"--resume: no {CHECKPOINT} in {out}")
        if (out / CHECKPOINT).exists():
            ckpt = load_checkpoint(out / CHECKPOINT)
        identity = _check_resume(out, stored, ckpt, identity, allow_changes)
    if out is not None and ctx.is_main:
        rundir.write_json(out / rundir.CONFIG, identity)
    metrics = _Metrics(out / "metrics.jsonl" if out is not None and ctx.is_main else None)

    torch.manual_seed(rank_seed(cfg.seed, ctx.rank))
    model.train()
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise rundir.RunDirError(
                f"--resume: {out / CHECKPOINT} does not fit this model: {str(e).splitlines()[0]}"
            ) from None
    model_cls, model_config = type(model), getattr(model, "config", None)
    rebuild = (lambda: model_cls(**model_config)) if model_config is not None else None
    net = wrap(model, ctx, device)  # what forward/backward run through (model itself on one process)
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.si_clip)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    start = 0
    pending: dict = {}
    if ckpt is not None:
        load_optimizer_state(opt, ckpt["optimizer"], net)
        sched.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt, ctx, cfg.seed)
        start = ckpt["step"]
        pending = ckpt.get("pending") or {}
        del ckpt
    if resume:
        metrics.truncate_after(start)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        disable=not (cfg.progress and ctx.is_main),
        desc=f"{task.meta.name}",
        dynamic_ncols=True,
    )
    n_train = len(task.train)
    t_last, tokens_since = time.perf_counter(), 0
    losses, aux_losses = list(pending.get("losses", [])), list(pending.get("aux_losses", []))
    history: list[dict] = []
    saved = start
    for step in range(start, cfg.steps):
        if stop.requested:
            if out is not None and saved != step:
                _save_checkpoint(
                    out / CHECKPOINT,
                    net,
                    opt,
                    sched,
                    step,
                    cfg,
                    identity=identity,
                    **({"pending": {"losses": losses, "aux_losses": aux_losses}} if losses else {}),
                )
            bar.close()
            where = f"; checkpoint {out / CHECKPOINT}: continue with --resume" if out is not None else ""
            raise TrainingInterrupted(f"interrupted after step {step} of {cfg.steps}{where}")
        opt.zero_grad(set_to_none=True)
        step_loss = step_aux = 0.0
        for micro in range(cfg.grad_accum):
            counter = (step * cfg.grad_accum + micro) * cfg.batch_size
            batch = _to(task.train.batch(shard(batch_indices(n_train, cfg.batch_size, counter, cfg.seed), ctx)), device)
            with grad_sync(net, ctx, sync=micro == cfg.grad_accum - 1):
                logits = net(batch["inputs"], batch.get("mask"))
                loss = global_mean(model.loss(logits, batch["targets"]), logits, batch["targets"], ctx)
                aux = _aux_loss(model)
                loss = loss + aux
                (loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
            if isinstance(aux, torch.Tensor):
                step_aux += float(aux.detach()) / cfg.grad_accum
            tokens_since += batch["inputs"].numel() * ctx.world
        if ctx.active:  # the global batch's loss (the same value on every rank)
            step_loss, step_aux = (v / ctx.world for v in all_reduce_sum([step_loss, step_aux], ctx, device))
        if not math.isfinite(step_loss):
            raise FloatingPointError(
                f"non-finite training loss {step_loss} at step {step + 1}; "
                "lower the learning rate or enable gradient clipping"
            )
        grad_norm = None
        if cfg.grad_clip and cfg.optimizer != "sgd_si":  # sgd_si clips relative to ||W|| itself
            grad_norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        if cfg.optimizer == "sgd_si" and opt.last_grad_norm is not None:
            grad_norm = float(opt.last_grad_norm)
        sched.step()
        losses.append(step_loss)
        if isinstance(aux, torch.Tensor):
            aux_losses.append(step_aux)
        done = step + 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            dt = time.perf_counter() - t_last
            rec = {
                "step": done,
                "split": "train",
                "loss": sum(losses) / len(losses),
                "lr": sched.get_last_lr()[0],
                "tokens_per_s": tokens_since / max(dt, 1e-9),
            }
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm
            if aux_losses:  # modules' auxiliary losses (MoE balancing), included in "loss"
                rec["aux_loss"] = sum(aux_losses) / len(aux_losses)
            metrics.log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            t_last, tokens_since, losses, aux_losses = time.perf_counter(), 0, [], []
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ev = evaluate(
                unwrap(net),
                task.validation,
                cfg.eval_batch_size,
                cfg.eval_max_batches,
                device,
                task.meta.metric,
                ctx=ctx,
            )
            rec = {"step": done, "split": "validation", **ev}
            metrics.log(rec)
            history.append(rec)
            if ctx.is_main:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in ev.items() if k != "count")
                bar.write(f"step {done}: validation {shown}")
        if out is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_checkpoint(
                out / CHECKPOINT,
                net,
                opt,
                sched,
                done,
                cfg,
                identity=identity,
                **({"pending": {"losses": losses, "aux_losses": aux_losses}} if losses else {}),
            )
            saved = done
    stop.restore()  # Ctrl-C during the final evaluation interrupts at once
    bar.close()

    final = {
        split: evaluate(
            unwrap(net),
            getattr(task, split),
            cfg.eval_batch_size,
            cfg.eval_max_batches,
            device,
            task.meta.metric,
            ctx=ctx,
        )
        for split in ("validation", "test")
    }
    final.update(steps=cfg.steps, num_parameters=sum(p.numel() for p in model.parameters()))
    if out is not None:
        metrics.log({"step": cfg.steps, "split": "test", **final["test"]})
        if hasattr(model, "save"):
            with rundir.storage(out / "model"):
                save_model(net, out / "model", rebuild)
        if ctx.is_main:
            rundir.write_json(out / "final.json", final)
    teardown(ctx)
    return final


def _aux_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of auxiliary losses that modules expose as ``aux_loss`` after a forward (e.g. MoE
    load balancing); 0 when there are none. longseq models name their providers (``aux_losses``)."""
    if isinstance(model, LongseqModel):
        return sum(model.aux_losses(), 0.0)
    total = 0.0
    for m in model.modules():
        a = getattr(m, "aux_loss", None)
        if isinstance(a, torch.Tensor):
            total = total + a
    return total
