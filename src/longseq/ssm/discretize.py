"""Discretisation of a diagonal continuous-time SSM ``x'(t) = A x(t) + B u(t)``.

With step ``dt`` and diagonal ``A`` (so every formula is elementwise):

* ``zoh`` (zero-order hold; S4D eq. (5), the S4D default)::

      dA = exp(dt A),        dB = (exp(dt A) - 1) / A * B

* ``bilinear`` (Tustin; S4 eq. (3), used by the original S4)::

      dA = (1 + dt A / 2) / (1 - dt A / 2),        dB = dt B / (1 - dt A / 2)

The Vandermonde kernel works with ``log dA`` (powers ``dA^l = exp(l log dA)``): for ``zoh`` that
is ``dt A`` itself, so no complex logarithm is taken on the default path.
"""

from __future__ import annotations

import torch

__all__ = ["DISCRETIZATIONS", "discretize"]

DISCRETIZATIONS = ("zoh", "bilinear")


def discretize(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, method: str = "zoh"):
    """``(log dA, dB)`` for complex ``A, B [..., N]`` and real ``dt [...]`` (broadcast over ``N``)."""
    dtA = dt.unsqueeze(-1) * A  # [..., N]
    if method == "zoh":
        return dtA, torch.expm1(dtA) / A * B
    if method == "bilinear":
        den = 1 - dtA / 2
        return torch.log((1 + dtA / 2) / den), dt.unsqueeze(-1) * B / den
    raise ValueError(f"disc must be one of {', '.join(DISCRETIZATIONS)}; got {method!r}")
