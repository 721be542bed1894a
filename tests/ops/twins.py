"""Shared checks tying a fast op to its naive twin (``longseq.ops.<op>.naive``).

:func:`check_twin` runs both on the same fresh leaves (float64 / complex128) and compares

* the values (every tensor output, tolerances given by the caller);
* the gradients of every input that requires one, for one random cotangent per output
  (complex outputs: the real part of ``<g, y>``, torch's convention);
* a second backward through a retained graph of the fast op: ``retain_graph=True`` then again,
  the two gradients bitwise equal (a Function that consumes or drops what it saved fails here).

:func:`bf16_smoke` runs the fast op forward and backward on bfloat16 copies of the real inputs and
returns ``"runs"`` (finite outputs and gradients) or the clear error it raised.
"""

from __future__ import annotations

import torch

COVERED: set[str] = set()
"""Qualified names of the Functions a test here has compared with their twins (filled as tests run)."""


def _tensors(out):
    """The tensors of an op's output, nested tuples (``(y, (S, z))``) flattened; ``None`` skipped."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for part in out for t in _tensors(part)]
    return []


def _loss(outs, cots):
    total = 0
    for y, g in zip(outs, cots):
        if g is None:
            continue
        total = total + ((y.conj() * g).real.sum() if y.is_complex() else (y * g).sum())
    return total


def leaves(*tensors):
    """Fresh copies of ``tensors`` that require grad (integer / bool tensors are passed through)."""
    return [t.detach().clone().requires_grad_() if t.is_floating_point() or t.is_complex() else t for t in tensors]


def check_twin(fast, naive, inputs, *, rtol=1e-9, atol=1e-10, functions=(), differentiable=None, compare=None):
    """``fast(*inputs)`` against ``naive(*inputs)``: values, gradients, a retained-graph second backward.

    ``inputs``: tensors; floating/complex ones become leaves requiring grad (``differentiable``, a
    list of bools, can exclude some). ``compare(outs)``: which outputs to compare (default all
    tensors). ``functions``: the autograd Function classes this comparison covers (recorded).
    """
    diff = [t.is_floating_point() or t.is_complex() for t in inputs] if differentiable is None else differentiable
    pick = compare or (lambda outs: outs)

    def fresh():
        return [t.detach().clone().requires_grad_() if d else t for t, d in zip(inputs, diff)]

    a, b = fresh(), fresh()
    yf, yn = pick(_tensors(fast(*a))), pick(_tensors(naive(*b)))
    assert len(yf) == len(yn)
    for u, v in zip(yf, yn):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol)
    cots = [torch.randn_like(y) if y.requires_grad else None for y in yf]
    wrt_a = [t for t, d in zip(a, diff) if d]
    wrt_b = [t for t, d in zip(b, diff) if d]
    ga = torch.autograd.grad(_loss(yf, cots), wrt_a, allow_unused=True)
    gb = torch.autograd.grad(_loss(yn, cots), wrt_b, allow_unused=True)
    for i, (u, v) in enumerate(zip(ga, gb)):
        if u is None or v is None:  # no gradient path on one side: the other must be zero
            w = u if v is None else v
            assert w is None or not w.abs().max() > 0, f"input {i}: gradient on one side only"
            continue
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol, msg=lambda m: f"gradient of input {i}: {m}")

    c = fresh()  # second backward through a retained graph
    loss = _loss(pick(_tensors(fast(*c))), cots)
    wrt_c = [t for t, d in zip(c, diff) if d]
    g1 = torch.autograd.grad(loss, wrt_c, retain_graph=True, allow_unused=True)
    g2 = torch.autograd.grad(loss, wrt_c, allow_unused=True)
    for u, v in zip(g1, g2):
        assert (u is None) == (v is None)
        if u is not None:
            torch.testing.assert_close(u, v, rtol=0, atol=0)
    COVERED.update(f"{f.__module__}.{f.__qualname__}" for f in functions)


def bf16_smoke(fast, inputs):
    """``"runs"`` if the fast op takes bfloat16 copies of the real floating inputs (complex ones stay
    complex64) forward and backward with finite results, else the exception it raised."""
    xs = []
    for t in inputs:
        if t.is_complex():
            t = t.to(torch.complex64)
        elif t.is_floating_point():
            t = t.to(torch.bfloat16)
        xs.append(t.detach().requires_grad_() if t.is_floating_point() or t.is_complex() else t)
    try:
        outs = _tensors(fast(*xs))
        loss = sum((y.float().sum() if not y.is_complex() else y.real.float().sum()) for y in outs if y.requires_grad)
        grads = torch.autograd.grad(loss, [t for t in xs if t.is_floating_point() or t.is_complex()], allow_unused=True)
    except (RuntimeError, TypeError, ValueError) as e:
        return e
    for t in [*outs, *[g for g in grads if g is not None]]:
        assert torch.isfinite(t.real if t.is_complex() else t.float()).all()
    return "runs"
