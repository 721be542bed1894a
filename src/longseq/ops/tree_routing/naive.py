"""Readable references of Treeformer's path gathers (Madaan et al. 2023, Section 3): the ``[M, P, Dh]``
rows ``table[idx]`` gathered at once and contracted, differentiated by autograd."""

from __future__ import annotations

import torch

__all__ = ["path_logits_naive", "path_mix_naive"]


def path_logits_naive(q: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[m, n] = q[m] . table[idx[m, n]]`` -> ``[M, P]``."""
    return (q[:, None, :] * table[idx]).sum(-1)  # table[idx]: [M, P, Dh]


def path_mix_naive(p: torch.Tensor, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[m] = sum_n p[m, n] table[idx[m, n]]`` -> ``[M, Dh]``."""
    return (p[..., None] * table[idx]).sum(1)
