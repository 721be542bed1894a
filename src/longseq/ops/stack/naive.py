"""Brute-force reference for the nondeterministic stack: enumerate every PDA run.

Readable and exponential: each step, every configuration ``(state, stack contents)`` reached so
far branches on every push/replace/pop transition, and the weights of the runs that reach the
same configuration are added. ``α[j][r, y]`` is then the total weight of the configurations with
state ``r`` and top ``y`` after ``j`` steps (DuSell & Chiang 2020, sec. 3: the quantity Lang's
algorithm computes). The bottom symbol ``⊥ = 0`` cannot be popped (2022 behaviour). Used by the
tests of :mod:`longseq.ops.stack.lang` with n ≤ 5 and |Q|, |Γ| ≤ 2-3.
"""

from __future__ import annotations

import torch


def brute_force_alpha(
    push: torch.Tensor, repl: torch.Tensor, pop: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """``push, repl [n, Q, S, Q, S]``, ``pop [n, Q, S, Q]`` (one sequence, steps 1..n) ->
    ``α [n + 1, Q, S]`` for times 0..n (float64).

    A stack element is ``(symbol, i)`` with ``i + 1`` the time it was pushed (``i = -1`` for
    ``⊥``; a replace keeps ``i``). ``window=D``: the limited stack of DuSell & Chiang 2022 keeps
    only segments ``γ[i→t]`` with ``t − i ≤ D``, i.e. it drops every run that at some time ``t``
    has on top an element with ``t − i > D``."""
    n, Q, S = push.shape[:3]
    configs = {(0, ((0, -1),)): torch.ones((), dtype=torch.float64)}
    out = [_alpha(configs, Q, S)]
    for j in range(n):
        t = j + 1  # the time reached by this step
        nxt: dict = {}
        for (q, stack), w in configs.items():
            x, i_top = stack[-1]
            for r in range(Q):
                for y in range(S):
                    _add(nxt, (r, stack + ((y, t - 1),)), w * push[j, q, x, r, y])
                    _add(nxt, (r, stack[:-1] + ((y, i_top),)), w * repl[j, q, x, r, y])
                if len(stack) > 1:
                    _add(nxt, (r, stack[:-1]), w * pop[j, q, x, r])
        if window is not None:
            nxt = {k: w for k, w in nxt.items() if t - k[1][-1][1] <= window}
        configs = nxt
        out.append(_alpha(configs, Q, S))
    return torch.stack(out)


def _add(d: dict, key, w) -> None:
    d[key] = d[key] + w if key in d else w


def _alpha(configs: dict, Q: int, S: int) -> torch.Tensor:
    a = torch.zeros(Q, S, dtype=torch.float64)
    for (q, stack), w in configs.items():
        a[q, stack[-1][0]] = a[q, stack[-1][0]] + w
    return a


__all__ = ["brute_force_alpha"]
