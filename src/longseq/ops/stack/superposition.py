"""The superposition stack of Joulin & Mikolov 2015 ("Inferring Algorithmic Patterns with
Stack-Augmented Recurrent Nets", NeurIPS, eq. 1-3), as in DuSell & Chiang's official code
(``stack_rnn_models/joulin_mikolov.py``), which the 2020-22 papers use as their baseline.

The stack is a matrix ``s [B, m, H]`` (``m``-dimensional elements, index 0 = top). With action
probabilities ``(push, pop, no-op) = softmax(A h)`` and a pushed vector ``v = σ(W h)``:

    s'[0]   = push · v        + pop · s[1]     + noop · s[0]
    s'[i]   = push · s[i-1]   + pop · s[i+1]   + noop · s[i]        (missing elements are 0)

and the reading is the top element ``s'[0]``. Decisions: the official code's variant with
``m``-dimensional elements and one action triple per stack (not per unit), a learned
projection for ``v`` (``push_hidden_state=False``, its default), and an unbounded depth (the
stack grows by one element per step).
"""

from __future__ import annotations

import torch


def superposition_update(
    elements: torch.Tensor, push: torch.Tensor, pop: torch.Tensor, noop: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """``elements [B, m, H]``, action probabilities ``[B]`` each, ``value [B, m]`` -> ``[B, m, H + 1]``."""
    B, m, H = elements.shape
    zero = elements.new_zeros(B, m, 1)
    pushed = torch.cat([value[:, :, None], elements], dim=2)  # [B, m, H + 1]
    popped = torch.cat([elements[:, :, 1:], zero, zero], dim=2)  # [B, m, H + 1]
    kept = torch.cat([elements, zero], dim=2)  # [B, m, H + 1]
    return push[:, None, None] * pushed + pop[:, None, None] * popped + noop[:, None, None] * kept
