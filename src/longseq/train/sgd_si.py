"""Optimisers of the trainer (``TrainConfig.optimizer``), including the SIBERT recipe's SGD.

``adamw``  AdamW with :func:`~longseq.optim.param_groups` (the default; unchanged).
``sgd``    plain SGD (no momentum) + weight decay on the same parameter groups; the trainer's
           fixed ``grad_clip`` applies as for AdamW.
``sgd_si`` SGD + weight decay with the gradient clipping of Li, Bhojanapalli, Zaheer, Reddi,
           Kumar, ICML 2022, "Robust Training of Neural Networks Using Scale Invariant
           Architectures" (arXiv 2202.00980), meant for ``scale_invariant=True`` models::

               g_t     = grad L(W_t)                         (all parameters, one global vector)
               g_t    <- g_t * min(1, C sqrt(2 lambda / eta_t) ||W_t|| / ||g_t||)
               W_{t+1} = (1 - eta_t lambda) W_t - eta_t g_t

           eta_t is the scheduled lr of the step, lambda the weight decay, C = ``si_clip``.
           sqrt(2 lambda / eta) ||W|| is the gradient norm at which SGD + WD on a scale-invariant
           loss is in equilibrium: the gradient is orthogonal to W, so
           ||W_{t+1}||^2 = (1 - eta lambda)^2 ||W_t||^2 + eta^2 ||g_t||^2, and the norm stays
           put when ||g_t||^2 = (2 lambda / eta - lambda^2) ||W_t||^2 ~ (2 lambda / eta) ||W_t||^2.
           Clipping there bounds how far a single step can move W in angle, whatever the scale
           of the initialisation or of the loss.

Decisions (only the abstract could be checked, which gives the rule up to the constant; the rest
follows the project's reference notes, written from memory of the paper): C = ``si_clip`` defaults to 2 (clip at twice the equilibrium norm, so typical
steps are untouched and only spikes are cut); ``si_clip=None`` is the recipe without its
optional step (3). Weight decay applies to every parameter (all of them are scale invariant in
an SI model: embeddings included, there are no biases or norm gains) and ||W|| is the global
norm of all parameters; one lr and one weight decay for all. No momentum ("vanilla SGD"), so
the optimiser keeps no state and resumes exactly from its param_groups. The lr schedule is the
trainer's (warmup + cosine), which also moves the clipping threshold through eta_t. Under FSDP
the global norms would need an all-reduce over shards: not supported.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..optim import param_groups

OPTIMIZERS = ("adamw", "sgd", "sgd_si")


class SGDSI(torch.optim.Optimizer):
    """SGD + weight decay with the global gradient norm clipped at ``clip * sqrt(2 wd / lr) * ||W||``.

    After each ``step``, ``last_grad_norm`` holds the unclipped global gradient norm (a tensor)
    and ``last_clip_bound`` the threshold it was compared with.
    """

    def __init__(self, params, lr: float, weight_decay: float, clip: float | None = 2.0):
        if lr <= 0:
            raise ValueError(f"sgd_si: lr must be > 0, got {lr}")
        if weight_decay <= 0:
            raise ValueError(
                f"sgd_si: weight_decay must be > 0 (the recipe is SGD + weight decay; the "
                f"clipping threshold is proportional to sqrt(weight_decay)), got {weight_decay}"
            )
        if clip is not None and clip <= 0:
            raise ValueError(f"sgd_si: si_clip must be > 0 or None (no clipping), got {clip}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, clip=clip))
        self.last_grad_norm: torch.Tensor | None = None
        self.last_clip_bound: torch.Tensor | None = None

    def _hyper(self) -> tuple[float, float, float | None]:
        settings = {(g["lr"], g["weight_decay"], g["clip"]) for g in self.param_groups}
        if len(settings) != 1:
            raise ValueError(
                f"sgd_si: all parameter groups must share lr, weight_decay and clip, got {sorted(settings)}"
            )
        return settings.pop()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr, wd, clip = self._hyper()
        params = [p for g in self.param_groups for p in g["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return loss
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = torch.ones_like(grad_norm)
        if clip is not None:
            w_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p) for p in params]))
            self.last_clip_bound = clip * math.sqrt(2 * wd / lr) * w_norm
            scale = torch.clamp(self.last_clip_bound / grad_norm.clamp_min(1e-30), max=1.0)
        self.last_grad_norm = grad_norm
        for p in params:
            p.mul_(1 - lr * wd)
            if p.grad is not None:
                p.add_(p.grad * scale, alpha=-lr)
        return loss


def build_optimizer(
    model: nn.Module,
    optimizer: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    si_clip: float | None = 2.0,
) -> torch.optim.Optimizer:
    """The trainer's optimiser by name (see the module docstring)."""
    if optimizer == "adamw":
        return torch.optim.AdamW(param_groups(model, lr, weight_decay), lr=lr, betas=betas)
    if optimizer == "sgd":
        return torch.optim.SGD(param_groups(model, lr, weight_decay), lr=lr)
    if optimizer == "sgd_si":
        params = [p for p in model.parameters() if p.requires_grad]
        return SGDSI(
            [{"params": params, "names": [n for n, p in model.named_parameters() if p.requires_grad]}],
            lr=lr,
            weight_decay=weight_decay,
            clip=si_clip,
        )
    raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")


def check_optimizer(optimizer: str, si_clip: float | None, fsdp: bool) -> None:
    """Validate the trainer's optimiser settings (raises ``ValueError``)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if si_clip is not None and si_clip <= 0:
        raise ValueError(f"si_clip must be > 0 or None (no clipping), got {si_clip}")
    if optimizer == "sgd_si" and fsdp:
        raise ValueError("optimizer 'sgd_si' needs global parameter and gradient norms: use DDP, not fsdp=True")
