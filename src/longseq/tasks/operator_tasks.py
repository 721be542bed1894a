"""Operator-learning tasks (kind ``regression``): ``burgers`` and ``darcy``, the 1D and 2D benchmarks of
Li, Kovachki et al., "Fourier Neural Operator for Parametric PDEs" (ICLR 2021), sec. 5.1-5.2, with
data generated offline by the solvers of :mod:`longseq.tasks.pde`, seeded and cached
(:mod:`longseq.tasks.cache`); build with ``longseq data build burgers darcy``.

Batches: ``inputs`` float32 ``[B, s]`` (Burgers: u(x, 0)) or ``[B, s, s]`` (Darcy: a(x)), ``targets``
the same shape (u(x, 1) / u(x)); no mask. The grid coordinates are appended by the operator models,
not stored. The loss and metric are the paper's relative L2 error ||u_pred - u|| / ||u|| per sample,
averaged (``metric="rel_l2"``).

Resolutions: the data are solved once on the fine grid (``n`` = 8,192 points for Burgers, ``s_solve``
nodes per side for Darcy) and subsampled, as in the paper: ``resolution`` is the training (and
default evaluation) resolution; :meth:`RegressionTask.split_at` gives any split at another
resolution of the same samples, for zero-shot super-resolution tables.

* ``burgers``: u0 ~ N(0, 625 (-Delta + 25 I)^-2), nu = 0.1, u(., 1) by pseudo-spectral ETDRK4 at
  n = 8,192 (dt = 5e-3: the tests show dt 1e-2 -> 1e-3 changes u(., 1) by < 1e-6, and the Cole-Hopf
  error at dt 5e-3 is 1e-11). Subsampled by taking every n/s-th point (x_j = j / s).
  Preset ``quick``: 1,000 train / 100 validation / 200 test (the paper's 1,000 / 200), s = 256.
* ``darcy``: a = 12 or 3 by the sign of z ~ N(0, (-Delta + 9 I)^-2) (Neumann), f = 1, u = 0 on the
  boundary, solved by PCG on the s_solve x s_solve node grid; subsampled every r-th node
  (s = (s_solve - 1) / r + 1). The paper solves at 421 and trains 1,000 samples at 85 (r = 5). Here
  PCG at 421 takes seconds per sample on one core (the paper's sample count takes over half an
  hour; per-sample times at 421 / 211 / 141: benchmarks/notes/2026-12-08-docstring-timings.md),
  and the development machine has 2 shared cores, so preset ``quick`` solves 550 samples at
  s_solve = 141 (a paper resolution) and trains 400 at s = 71 (r = 2), tested at 29, 36, 71 and
  141; preset ``paper`` is the paper's 421 / 85 with 1,000 training samples (build it where there
  is time).
  Preset ``tiny`` (both tasks): a few samples for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import pde
from .base import Split, Task, TaskMeta, register_task, resolve_preset
from .cache import cached, progress, source_fingerprint

_TAGS = {"burgers": 0x62757267, "darcy": 0x64617263}

PRESETS = {
    "burgers": {
        "quick": dict(n_train=1000, n_val=100, n_test=200, n=8192, nu=0.1, dt=5e-3, resolution=256),
        "tiny": dict(n_train=16, n_val=4, n_test=4, n=512, nu=0.1, dt=1e-2, resolution=64),
    },
    "darcy": {
        "quick": dict(n_train=400, n_val=50, n_test=100, s_solve=141, resolution=71),
        "paper": dict(n_train=1000, n_val=100, n_test=100, s_solve=421, resolution=85),
        "tiny": dict(n_train=16, n_val=4, n_test=4, s_solve=33, resolution=17),
    },
}

TRAIN_DEFAULTS = {
    # the paper's optimiser: Adam, lr 1e-3, weight decay 1e-4, batch 20 (the official scripts decay the
    # lr by 0.5 every 100 of 500 epochs; the trainer's cosine schedule decays to min_lr_ratio * lr instead)
    "burgers": dict(
        steps=10_000,
        batch_size=20,
        lr=1e-3,
        weight_decay=1e-4,
        betas=(0.9, 0.999),
        warmup=0,
        min_lr_ratio=0.0,
        grad_clip=None,
        eval_every=500,
        eval_batch_size=50,
        checkpoint_every=1000,
    ),
    "darcy": dict(
        steps=2_500,
        batch_size=20,
        lr=1e-3,
        weight_decay=1e-4,
        betas=(0.9, 0.999),
        warmup=0,
        min_lr_ratio=0.0,
        grad_clip=None,
        eval_every=250,
        eval_batch_size=20,
        checkpoint_every=500,
    ),
}
MODEL_DEFAULTS = {
    # FNO sec. 5.1 / fourier_1d.py (k_max 16, width 64); the LNO at the FNO's width, rank 4
    "burgers": dict(
        operator="fno", normalize=False, options={"fno": dict(modes=16, width=64), "lowrank": dict(width=64, rank=4)}
    ),
    # FNO sec. 5.2 / fourier_2d.py (k_max 12, width 32, inputs and outputs normalised)
    "darcy": dict(
        operator="fno",
        normalize=True,
        options={
            "fno": dict(modes=12, width=32),
            "lowrank": dict(width=32, rank=4, kernel_width=32),
            "unet": dict(width=16, levels=3),
        },
    ),
}


@dataclass
class RegressionTask(Task):
    """A :class:`Task` whose samples exist at several resolutions: ``split_at(name, s)``."""

    full: dict = field(default_factory=dict)  # split -> (inputs, targets) at the finest resolution

    def resolutions(self) -> list[int]:
        return list(self.meta.extra["resolutions"])

    def split_at(self, split: str, resolution: int) -> Split:
        if split not in self.full:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(self.full)}")
        if resolution not in self.meta.extra["resolutions"]:
            raise ValueError(
                f"task {self.meta.name!r} has no resolution {resolution}; available: {self.meta.extra['resolutions']}"
            )
        x, y = self.full[split]
        return Split(*(_subsample(t, self.meta.extra["dim"], resolution) for t in (x, y)))


def _subsample(t: torch.Tensor, dim: int, s: int) -> torch.Tensor:
    n = t.shape[-1]
    if dim == 1:  # periodic grid x_j = j / n: every (n/s)-th point
        return t[:, :: n // s].contiguous()
    r = (n - 1) // (s - 1)  # closed grid with both boundaries: every r-th node
    return t[:, ::r, ::r].contiguous()


def _resolutions(dim: int, native: int) -> list[int]:
    if dim == 1:
        out, s = [], native
        while s >= 32 and native % s == 0:
            out.append(s)
            s //= 2
        return sorted(out)
    return sorted(
        (native - 1) // r + 1 for r in range(1, native) if (native - 1) % r == 0 and (native - 1) // r + 1 >= 9
    )


def _finish(
    name: str, preset: str, seed: int, cfg: dict, dim: int, native: int, arrays: dict, desc: str
) -> RegressionTask:
    res = cfg["resolution"]
    resolutions = _resolutions(dim, native)
    if res not in resolutions:
        raise ValueError(
            f"task {name!r}: resolution {res} is not a subsampling of the {native}-point grid; allowed: {resolutions}"
        )
    full = {}
    for split in ("train", "validation", "test"):
        x = torch.from_numpy(np.asarray(arrays[f"{split}_inputs"], dtype=np.float32))
        y = torch.from_numpy(np.asarray(arrays[f"{split}_targets"], dtype=np.float32))
        full[split] = (x, y)
    splits = {k: Split(*(_subsample(t, dim, res) for t in v)) for k, v in full.items()}
    xt, yt = splits["train"].inputs, splits["train"].targets
    meta = TaskMeta(
        name=name,
        kind="regression",
        vocab_size=0,
        seq_len=res,
        metric="rel_l2",
        preset=preset,
        seed=seed,
        description=desc,
        extra={
            "dim": dim,
            "resolution": res,
            "resolutions": resolutions,
            "native": native,
            "normalizer": {
                "in_mean": float(xt.mean()),
                "in_std": float(xt.std()),
                "out_mean": float(yt.mean()),
                "out_std": float(yt.std()),
            },
            "config": dict(cfg),
        },
    )
    return RegressionTask(
        meta,
        splits["train"],
        splits["validation"],
        splits["test"],
        model_defaults=dict(MODEL_DEFAULTS[name]),
        train_defaults=dict(TRAIN_DEFAULTS[name]),
        full=full,
    )


def generate_burgers(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([_TAGS["burgers"], seed])
    out = {}
    for split, num in (("train", cfg["n_train"]), ("validation", cfg["n_val"]), ("test", cfg["n_test"])):
        u0 = pde.grf_periodic_1d(num, cfg["n"], rng)
        u1 = np.empty_like(u0)
        chunk = 50
        for i in progress(range(0, num, chunk), desc=f"burgers {split}", unit="x50"):
            u1[i : i + chunk] = pde.burgers_etdrk4(u0[i : i + chunk], nu=cfg["nu"], dt=cfg["dt"])
        out[f"{split}_inputs"], out[f"{split}_targets"] = u0.astype(np.float32), u1.astype(np.float32)
    return out


def generate_darcy(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([_TAGS["darcy"], seed])
    out = {}
    for split, num in (("train", cfg["n_train"]), ("validation", cfg["n_val"]), ("test", cfg["n_test"])):
        s = cfg["s_solve"]
        a = pde.darcy_coefficient(pde.grf_neumann_2d(num, s, rng))
        u = np.empty_like(a)
        chunk = 16
        for i in progress(range(0, num, chunk), desc=f"darcy {split}", unit="x16"):
            u[i : i + chunk] = pde.darcy_solve(a[i : i + chunk])
        out[f"{split}_inputs"], out[f"{split}_targets"] = a.astype(np.float32), u.astype(np.float32)
    return out


def _source() -> str:
    return source_fingerprint(pde.__file__)  # the solvers; editing this module does not invalidate the data


@register_task("burgers")
def build_burgers(preset: str = "quick", seed: int = 0, cache: bool = True, **overrides) -> RegressionTask:
    cfg = resolve_preset("burgers", PRESETS["burgers"], preset, overrides)
    gen = {k: v for k, v in cfg.items() if k != "resolution"}  # the resolution does not change the data
    arrays = cached("burgers", preset, seed, gen, lambda: generate_burgers(cfg, seed), source=_source(), enabled=cache)
    return _finish(
        "burgers",
        preset,
        seed,
        cfg,
        1,
        cfg["n"],
        arrays,
        "1D viscous Burgers (nu = %g): u(x, 0) -> u(x, 1) (FNO sec. 5.1)" % cfg["nu"],
    )


@register_task("darcy")
def build_darcy(preset: str = "quick", seed: int = 0, cache: bool = True, **overrides) -> RegressionTask:
    cfg = resolve_preset("darcy", PRESETS["darcy"], preset, overrides)
    gen = {k: v for k, v in cfg.items() if k != "resolution"}
    arrays = cached("darcy", preset, seed, gen, lambda: generate_darcy(cfg, seed), source=_source(), enabled=cache)
    return _finish(
        "darcy", preset, seed, cfg, 2, cfg["s_solve"], arrays, "2D Darcy flow -div(a grad u) = 1, a -> u (FNO sec. 5.2)"
    )
