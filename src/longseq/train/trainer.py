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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import atomic_write
from ..tasks.base import IGNORE, Split, Task
from .distributed import (
    DistContext, all_reduce_sum, full_model_state, full_optimizer_state, global_mean, grad_norm_value, grad_sync,
    load_optimizer_state, rank_batch, rank_seed, restore_rng, rng_states, save_model, setup, shard, teardown, unwrap,
    world_size, wrap,
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
    min_lr_ratio: float = 0.1          # cosine decays to lr * min_lr_ratio
    grad_clip: float | None = 1.0
    grad_accum: int = 1                # micro-batches per step (batch_size is per micro-batch)
    eval_every: int = 250
    eval_batch_size: int = 128
    eval_max_batches: int | None = None  # cap evaluation cost on large splits (None = whole split)
    log_every: int = 10
    checkpoint_every: int = 250
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    fsdp: bool = False                 # several processes: shard model/optimizer with FSDP instead of DDP
    dist_timeout: float = 300.0        # several processes: seconds a rank waits for its peers before failing
    optimizer: str = "adamw"           # adamw | sgd | sgd_si (SIBERT's SGD + WD + clipping: train/sgd_si.py)
    si_clip: float | None = 2.0        # sgd_si: clip the gradient norm at si_clip * sqrt(2 wd / lr) * ||W||
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
        for k in ("steps", "batch_size", "grad_accum", "eval_every", "log_every", "checkpoint_every", "eval_batch_size"):
            if getattr(self, k) <= 0:
                raise ValueError(f"trainer setting {k} must be positive, got {getattr(self, k)}")
        if self.lr <= 0 or self.warmup < 0:
            raise ValueError(f"lr must be > 0 and warmup >= 0, got lr={self.lr}, warmup={self.warmup}")
        if self.dist_timeout <= 0:
            raise ValueError(f"dist_timeout must be positive (seconds), got {self.dist_timeout}")
        check_optimizer(self.optimizer, self.si_clip, self.fsdp)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        chunk = perm[pos: pos + batch_size - taken]
        out.append(chunk)
        taken += len(chunk)
    return torch.cat(out)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run_model(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(batch["inputs"], batch.get("mask"))
    return logits, model.loss(logits, batch["targets"])


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 128, max_batches: int | None = None,
             device=None, metric: str = "accuracy", *, ctx: DistContext | None = None) -> dict[str, float]:
    """Loss and accuracy summed over examples (LM: over target tokens), not averaged per batch.

    With the ``ctx`` of a multi-process run (every rank calls it), rank r evaluates batches
    r, r + world, ... and the sums and counts are all-reduced: every rank returns the global result."""
    ctx = ctx or DistContext()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    n_batches = math.ceil(len(split) / batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    own: list[int | None] = list(range(ctx.rank, n_batches, ctx.world))
    if ctx.active and ctx.fsdp:    # each forward all-gathers parameters: every rank runs as many
        own += [None] * (math.ceil(n_batches / ctx.world) - len(own))
    for b in own:
        if b is None:              # a filler forward on the first batch, not counted
            run_model(model, _to(split.batch(torch.arange(min(batch_size, len(split)))), device))
            continue
        idx = torch.arange(b * batch_size, min(len(split), (b + 1) * batch_size))
        batch = _to(split.batch(idx), device)
        logits, _ = run_model(model, batch)
        t = batch["targets"]
        if logits.dim() == 3:                      # LM: [B, L, V] against [B, L]
            keep = t != IGNORE
            n = int(keep.sum())
            lp = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), t.flatten(),
                                                   ignore_index=IGNORE, reduction="sum")
            correct += int(((logits.argmax(-1) == t) & keep).sum())
        else:
            n = t.shape[0]
            lp = torch.nn.functional.cross_entropy(logits.float(), t, reduction="sum")
            correct += int((logits.argmax(-1) == t).sum())
        loss_sum += float(lp)
        count += n
    if ctx.active:
        loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], ctx, device)
        correct, count = int(correct), int(count)
    model.train(was_training)
    out = {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1), "count": count}
    if metric in ("bpb", "masked_bpb"):        # bits per (masked, for kind "mlm") byte
        out[metric] = out["loss"] / math.log(2)
    return out


def _save_checkpoint(path: Path, model, opt, sched, step: int, cfg: TrainConfig) -> None:
    """Write the checkpoint of ``model`` (possibly DDP-wrapped or FSDP-sharded: then every rank
    calls this, the state is gathered and rank 0 writes plain state dicts plus every rank's RNG)."""
    model_state, opt_state, rng_ranks = full_model_state(model), full_optimizer_state(model, opt), rng_states()
    if model_state is None:        # not rank 0
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
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, wrong format, pickled code...
        raise ValueError(f"checkpoint {path} is corrupt or not a longseq checkpoint ({type(e).__name__}: {e})") from None


class _Metrics:
    def __init__(self, path: Path | None):
        self.path = path

    def truncate_after(self, step: int) -> None:
        """On resume, drop records logged after the checkpoint (they will be logged again)."""
        if self.path is None or not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write(self.path, lambda tmp: Path(tmp).write_text("".join(ln + "\n" for ln in keep)))

    def log(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def train(model: nn.Module, task: Task, cfg: TrainConfig, out_dir: str | os.PathLike | None = None,
          resume: bool = False, run_config: dict | None = None) -> dict[str, Any]:
    """Train ``model`` on ``task``; returns the final metrics (validation and test).

    Under ``torchrun`` (or in a process group the caller initialised) every rank calls this with
    the same arguments; ``cfg.batch_size`` stays the global batch. With ``cfg.fsdp`` the model is
    sharded in place and stays so: read the trained model back from ``out_dir/model``."""
    cfg.validate()
    rank_batch(cfg.batch_size, world_size())   # a clear error before any process group is joined
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ctx, device = setup(resolve_device(cfg.device), fsdp=cfg.fsdp, timeout_s=cfg.dist_timeout)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg_record = {"task": {"name": task.meta.name, "preset": task.meta.preset, "seed": task.meta.seed},
                      "model": {"class": type(model).__name__, **getattr(model, "config", {})},
                      "train": asdict(cfg), **(run_config or {})}
        if ctx.active:
            cfg_record["distributed"] = {"world_size": ctx.world, "strategy": "fsdp" if ctx.fsdp else "ddp"}
        atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(cfg_record, indent=2)))
    metrics = _Metrics(out / "metrics.jsonl" if out is not None and ctx.is_main else None)

    torch.manual_seed(rank_seed(cfg.seed, ctx.rank))
    model.train()
    ckpt = None
    if resume:
        if out is None or not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"--resume: no {CHECKPOINT} in {out}")
        ckpt = load_checkpoint(out / CHECKPOINT)
        model.load_state_dict(ckpt["model"])
    model_cls, model_config = type(model), getattr(model, "config", None)
    rebuild = (lambda: model_cls(**model_config)) if model_config is not None else None
    net = wrap(model, ctx, device)     # what forward/backward run through (model itself on one process)
    opt = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.betas, cfg.si_clip)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    start = 0
    if ckpt is not None:
        load_optimizer_state(opt, ckpt["optimizer"], net)
        sched.load_state_dict(ckpt["scheduler"])
        restore_rng(ckpt, ctx, cfg.seed)
        start = ckpt["step"]
        metrics.truncate_after(start)
        del ckpt

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and ctx.is_main), desc=f"{task.meta.name}",
               dynamic_ncols=True)
    n_train = len(task.train)
    t_last, tokens_since, losses, aux_losses = time.perf_counter(), 0, [], []
    history: list[dict] = []
    for step in range(start, cfg.steps):
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
        if ctx.active:                 # the global batch's loss (the same value on every rank)
            step_loss, step_aux = (v / ctx.world for v in all_reduce_sum([step_loss, step_aux], ctx, device))
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"non-finite training loss {step_loss} at step {step + 1}; "
                                     "lower the learning rate or enable gradient clipping")
        grad_norm = None
        if cfg.grad_clip and cfg.optimizer != "sgd_si":     # sgd_si clips relative to ||W|| itself
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
            rec = {"step": done, "split": "train", "loss": sum(losses) / len(losses),
                   "lr": sched.get_last_lr()[0], "tokens_per_s": tokens_since / max(dt, 1e-9)}
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm
            if aux_losses:             # modules' auxiliary losses (MoE balancing), included in "loss"
                rec["aux_loss"] = sum(aux_losses) / len(aux_losses)
            metrics.log(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:.0f}")
            t_last, tokens_since, losses, aux_losses = time.perf_counter(), 0, [], []
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ev = evaluate(unwrap(net), task.validation, cfg.eval_batch_size, cfg.eval_max_batches, device,
                          task.meta.metric, ctx=ctx)
            rec = {"step": done, "split": "validation", **ev}
            metrics.log(rec)
            history.append(rec)
            if ctx.is_main:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in ev.items() if k != "count")
                bar.write(f"step {done}: validation {shown}")
        if out is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            _save_checkpoint(out / CHECKPOINT, net, opt, sched, done, cfg)
    bar.close()

    final = {
        split: evaluate(unwrap(net), getattr(task, split), cfg.eval_batch_size, cfg.eval_max_batches, device,
                        task.meta.metric, ctx=ctx)
        for split in ("validation", "test")
    }
    final.update(steps=cfg.steps, num_parameters=sum(p.numel() for p in model.parameters()))
    if out is not None:
        metrics.log({"step": cfg.steps, "split": "test", **final["test"]})
        if hasattr(model, "save"):
            save_model(net, out / "model", rebuild)
        if ctx.is_main:
            atomic_write(out / "final.json", lambda tmp: Path(tmp).write_text(json.dumps(final, indent=2)))
    teardown(ctx)
    return final


def _aux_loss(model: nn.Module) -> torch.Tensor | float:
    """Sum of auxiliary losses that modules expose as ``aux_loss`` after a forward (e.g. MoE
    load balancing); 0 when there are none."""
    total = 0.0
    for m in model.modules():
        a = getattr(m, "aux_loss", None)
        if isinstance(a, torch.Tensor):
            total = total + a
    return total
