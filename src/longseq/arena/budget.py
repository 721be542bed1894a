"""Equal parameter budget per task: every mixer's model within ``tolerance`` of the softmax model.

LRA (Tay et al. 2021, sec. 4.1) compares efficient Transformers at (roughly) equal parameter
count per task. Mixers differ in their own parameters (an SSM layer has far fewer than the
four attention projections; Linformer adds ``k x max_len`` projections), so the arena adjusts
each model with a small search, keeping ``n_layers`` and the mixer's options:

1. the preset model as is, if already within tolerance;
2. the feed-forward width (``ffn_mult``): the count is linear in the hidden width, so two
   counts give the slope and one solve the multiplier, clamped to ``FFN_MULT_RANGE``;
3. ``d_model`` in steps of ``num_heads`` (bisection over the step count, the count grows with
   ``d_model``), then step 2 again at the new width to fine-tune.

Among fitting candidates the smallest change wins (none, then ``ffn_mult``, then ``d_model``).
When nothing fits, the closest candidate is used if its width is at least half the preset's,
else the preset model is kept; either way it is flagged (``within=False``): shrinking to a
degenerate width would compare a broken model, not the method.

Mixers that bring their own feed-forward (FLASH's GAU, GSS: ``spec.has_ffn``) or models built
with ``ffn="none"`` skip step 2. Counting builds the model on PyTorch's ``meta`` device (no memory,
no initialisation work) and falls back to the CPU for a mixer whose constructor needs real
tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from ..train import build_model

TOLERANCE = 0.10
FFN_MULT_RANGE = (0.5, 8.0)
MAX_DMODEL_STEPS = 256  # search d_model within d0 +- MAX_DMODEL_STEPS * num_heads


def count_parameters(task, mixer: str, overrides: dict[str, Any]) -> tuple[int, dict]:
    """(number of parameters, the model's resolved config) of ``build_model(task, mixer, **overrides)``."""
    try:
        with torch.device("meta"):
            model = build_model(task, mixer, **overrides)
    except ValueError:
        raise  # invalid settings fail the same way on any device
    except Exception:  # a constructor that needs real tensors (eigh, numpy, ...)
        model = build_model(task, mixer, **overrides)
    return sum(p.numel() for p in model.parameters()), dict(getattr(model, "config", {}))


def _ratio(n: int, reference: int) -> float:
    return n / reference


def _within(n: int, reference: int, tol: float) -> bool:
    return abs(_ratio(n, reference) - 1) <= tol


def _solve_ffn(task, mixer, overrides, reference) -> tuple[int, dict, float] | None:
    """Best ``ffn_mult`` for the reference count at the current width: (count, overrides, mult)."""
    n0, cfg = count_parameters(task, mixer, overrides)
    m0 = float(cfg.get("ffn_mult", 4.0))
    n1, _ = count_parameters(task, mixer, {**overrides, "ffn_mult": m0 + 1.0})
    slope = n1 - n0
    if slope <= 0:
        return None  # the model has no adjustable feed-forward
    lo, hi = FFN_MULT_RANGE
    mult = round(min(hi, max(lo, m0 + (reference - n0) / slope)), 3)
    over = {**overrides, "ffn_mult": mult}
    return count_parameters(task, mixer, over)[0], over, mult


def _has_ffn(mixer: str, cfg: dict) -> bool:
    from .. import mixers

    return cfg.get("ffn", "mlp") != "none" and not mixers.spec(mixer).has_ffn


def match_budget(
    task, mixer: str, reference: int, overrides: dict[str, Any] | None = None, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Model overrides that bring ``mixer``'s parameter count within ``tolerance`` of
    ``reference``. Returns ``{"overrides", "num_parameters", "reference", "ratio", "within",
    "adjustment"}`` where ``adjustment`` reads e.g. ``"ffn_mult 4 -> 5.25"`` (``"none"`` when the
    preset model already fits); when nothing fits, the closest candidate with ``within=False``."""
    overrides = dict(overrides or {})
    n, cfg = count_parameters(task, mixer, overrides)
    best = (n, overrides, "none")
    if _within(n, reference, tolerance):
        return _result(best, reference, tolerance)
    d0, heads, m0 = int(cfg["d_model"]), int(cfg.get("num_heads", 1)), float(cfg.get("ffn_mult", 4.0))
    ffn = _has_ffn(mixer, cfg)
    candidates = [best]

    if ffn:  # step 2: feed-forward width
        solved = _solve_ffn(task, mixer, overrides, reference)
        if solved:
            n, over, mult = solved
            candidates.append((n, over, f"ffn_mult {m0:g} -> {mult:g}"))
            if _within(n, reference, tolerance):
                return _result(candidates[-1], reference, tolerance)

    # step 3: d_model in steps of num_heads, bisection on the count (increasing in d_model)
    grow = candidates[0][0] < reference
    lo, hi = 0, 1
    count_at = {}

    def count_k(k: int) -> int | None:
        if k not in count_at:
            d = d0 + (k if grow else -k) * heads
            try:
                count_at[k] = count_parameters(task, mixer, {**overrides, "d_model": d})[0] if d >= heads else None
            except Exception:  # a width the mixer rejects (head_dim constraints, ...)
                count_at[k] = None
        return count_at[k]

    def past(k: int) -> bool:  # has the count crossed the reference at step k?
        c = count_k(k)
        return c is None or (c >= reference if grow else c <= reference)

    while not past(hi) and hi < MAX_DMODEL_STEPS:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if past(mid) else (mid, hi)
    for k in (lo, hi):
        c = count_k(k)
        if k == 0 or c is None:
            continue
        d = d0 + (k if grow else -k) * heads
        over = {**overrides, "d_model": d}
        candidates.append((c, over, f"d_model {d0} -> {d}"))
        if ffn and not _within(c, reference, tolerance / 4):
            solved = _solve_ffn(task, mixer, over, reference)
            if solved:
                n, over2, mult = solved
                candidates.append((n, over2, f"d_model {d0} -> {d}, ffn_mult {m0:g} -> {mult:g}"))
    fits = [c for c in candidates if _within(c[0], reference, tolerance)]
    if fits:
        return _result(min(fits, key=lambda c: _rank(c, reference)), reference, tolerance)
    # Nothing fits: the closest candidate of at least half the preset width; none such (e.g.
    # Linformer's k x max_len projections alone outweigh the softmax model) keeps the preset model
    # rather than a degenerate width, and says what came closest.
    close = min(candidates, key=lambda c: abs(_ratio(c[0], reference) - 1))
    if close[1].get("d_model", d0) >= d0 / 2:
        return _result(close, reference, tolerance)
    n, over, _ = candidates[0]
    how = f"none (nothing within tolerance; closest: {close[2]} at {_ratio(close[0], reference):.2f}x)"
    return _result((n, over, how), reference, tolerance)


def _rank(candidate, reference) -> tuple:
    """Among candidates within tolerance prefer the smallest change (ffn_mult alone before
    d_model), then the closest count. (Without any fit, the closest count wins.)"""
    n, _, how = candidate
    changes = 0 if how == "none" else (1 if how.startswith("ffn_mult") else 2)
    return (changes, abs(_ratio(n, reference) - 1))


def _result(candidate, reference: int, tolerance: float) -> dict[str, Any]:
    n, over, how = candidate
    return {
        "overrides": over,
        "num_parameters": int(n),
        "reference": int(reference),
        "ratio": round(_ratio(n, reference), 4),
        "within": _within(n, reference, tolerance),
        "tolerance": tolerance,
        "adjustment": how,
    }
