"""Parameter groups for AdamW, including per-parameter learning rates that mixers request.

Following the S4 recipe (Gu et al. 2022, appendix; the state-spaces repo's ``register``), a mixer
tags a parameter with its own optimiser settings::

    from longseq.optim import set_optim
    set_optim(self.log_dt, lr=1e-3, weight_decay=0.0)

:func:`param_groups` then puts tagged parameters in groups of their own; untagged parameters get
the global lr, and weight decay only if they are matrices that are not embeddings (norm scales,
biases and embedding tables get none).
"""

from __future__ import annotations

from torch import nn


def set_optim(param: nn.Parameter, **settings) -> nn.Parameter:
    """Attach optimiser settings (``lr``, ``weight_decay``) to one parameter."""
    unknown = set(settings) - {"lr", "weight_decay"}
    if unknown:
        raise ValueError(f"set_optim: unknown settings {sorted(unknown)}; allowed: lr, weight_decay")
    param._optim = dict(settings)  # noqa: SLF001 - attribute read by param_groups
    return param


def scale_lr(param: nn.Parameter, scale: float) -> nn.Parameter:
    """Multiply one parameter's learning rate by ``scale`` (layer-wise lr decay when fine-tuning,
    :func:`longseq.models.finetune.layerwise_lr_decay`), on top of any ``set_optim`` tag: the
    parameter keeps its own lr (or the global one) and weight-decay rule, times ``scale``."""
    tag = dict(getattr(param, "_optim", None) or {})
    tag["lr_scale"] = tag.get("lr_scale", 1.0) * float(scale)
    param._optim = tag  # noqa: SLF001 - attribute read by param_groups
    return param


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tag = dict(getattr(p, "_optim", None) or {})
        lr_scale = tag.pop("lr_scale", 1.0)
        if tag:
            key = ("tagged", tuple(sorted(tag.items())))
            settings = {"lr": lr, "weight_decay": 0.0, **tag}
        elif p.ndim < 2 or id(p) in embedding_params:
            key, settings = ("no_decay",), {"lr": lr, "weight_decay": 0.0}
        else:
            key, settings = ("decay",), {"lr": lr, "weight_decay": weight_decay}
        if lr_scale != 1.0:
            key = key + (("lr_scale", lr_scale),)
            settings = {**settings, "lr": settings["lr"] * lr_scale}
        g = groups.setdefault(key, {"params": [], "names": [], **settings})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())
