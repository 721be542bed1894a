"""Resolution tables for trained operators: relative L2 test error per resolution (the training
resolution and, zero-shot, every other one the task provides), and timing of a model against the
numerical solver per sample. Used by ``longseq operators`` (:mod:`longseq.commands.operators`)."""

from __future__ import annotations

import time

import torch

from .fno import relative_l2

# Published relative L2 test errors (FNO paper, Li et al. ICLR 2021; the Burgers FNO figure is the one
# the issue and /work/shared/reference/structured.md quote, ~0.0016-0.0018 across s = 256...8192 with
# 1,000 training samples; Darcy table 2 FNO 0.0108 / 0.0109 / 0.0109 / 0.0098 at s = 85 / 141 / 211 / 421,
# LNO 0.0520 / 0.0461 / 0.0445 at 85 / 141 / 211 - the per-resolution Darcy figures are from memory).
PUBLISHED = {
    "burgers": {"fno": {256: 0.0018, 512: 0.0018, 1024: 0.0018, 2048: 0.0018, 4096: 0.0018, 8192: 0.0018}},
    "darcy": {
        "fno": {85: 0.0108, 141: 0.0109, 211: 0.0109, 421: 0.0098},
        "lowrank": {85: 0.0520, 141: 0.0461, 211: 0.0445},
    },
}


@torch.no_grad()
def relative_l2_at(model: torch.nn.Module, split, batch_size: int = 20) -> float:
    """Mean relative L2 error of ``model`` over a :class:`~longseq.tasks.base.Split` of float inputs/targets."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(split), batch_size):
        idx = torch.arange(i, min(len(split), i + batch_size))
        b = split.batch(idx)
        pred = model(b["inputs"].to(device))
        total += float(relative_l2(pred, b["targets"].to(device).to(pred.dtype), reduction="sum"))
        count += len(idx)
    model.train(was)
    return total / max(count, 1)


def resolution_table(
    model: torch.nn.Module, task, resolutions=None, split: str = "test", batch_size: int = 20
) -> dict[int, float]:
    """``{s: relative L2}`` on ``split`` of a :class:`~longseq.tasks.operator_tasks.RegressionTask`
    at each resolution (default: all the task provides)."""
    res = task.resolutions() if resolutions is None else list(resolutions)
    return {s: relative_l2_at(model, task.split_at(split, s), batch_size) for s in res}


@torch.no_grad()
def seconds_per_sample(model: torch.nn.Module, inputs: torch.Tensor, batch_size: int = 20, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of the model's forward over ``inputs``, divided by the sample count."""
    model.eval()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, inputs.shape[0], batch_size):
            model(inputs[i : i + batch_size])
        best = min(best, time.perf_counter() - t0)
    return best / inputs.shape[0]


def markdown_table(
    rows: dict[str, dict[int, float]],
    train_resolution: int,
    published: dict | None = None,
    params: dict[str, int] | None = None,
) -> str:
    """Rows = models, columns = resolutions; the training resolution marked with ``*``."""
    res = sorted({s for r in rows.values() for s in r})
    head = "| model | params | " + " | ".join(f"s={s}{'*' if s == train_resolution else ''}" for s in res) + " |"
    lines = [head, "|" + "---|" * (len(res) + 2)]
    for name, r in rows.items():
        p = f"{params[name]:,}" if params and name in params else ""
        lines.append(f"| {name} | {p} | " + " | ".join(f"{r[s]:.4f}" if s in r else "" for s in res) + " |")
    for name, r in (published or {}).items():
        lines.append(f"| {name} (paper) | | " + " | ".join(f"{r[s]:.4f}" if s in r else "" for s in res) + " |")
    return "\n".join(lines)
