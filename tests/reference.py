"""Shared check of a mixer's fast path against its naive reference (values and gradients)."""

import torch


def assert_matches_reference(m, reference, x, mask, **tol):
    """``m(x, mask)`` equals ``reference(m, x, mask)``, and so do the gradients of a random linear
    function of the output with respect to the input and every parameter of ``m``."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = m(xa, mask), reference(m, xb, mask)
    torch.testing.assert_close(ya, yb, **tol)
    g = torch.randn_like(ya)
    names = ["x"] + [n for n, _ in m.named_parameters()]
    grads_a = torch.autograd.grad((ya * g).sum(), [xa, *m.parameters()])
    grads_b = torch.autograd.grad((yb * g).sum(), [xb, *m.parameters()])
    for n, a, b in zip(names, grads_a, grads_b):
        torch.testing.assert_close(a, b, **tol, msg=lambda err, n=n: f"gradient of {n}: {err}")
