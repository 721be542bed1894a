"""Readable reference of the diagonal linear recurrence (S5, Smith et al. 2023, Section 2.2):
``h_t = a_t h_{t-1} + b_t`` by one Python loop over time, for tests and for reading."""

from __future__ import annotations

import torch

__all__ = ["linear_scan_naive"]


def linear_scan_naive(a, b, h0=None):
    """Plain loop over time: ``h_t = a_t h_{t-1} + b_t``; ``a`` broadcastable to ``b [..., L, P]``, ``h0 [..., P]``
    (zeros if None). Returns ``(h [..., L, P], h_last [..., P])``, as :func:`..chunk.linear_scan`."""
    a, b = torch.broadcast_tensors(a, b)
    h = torch.zeros_like(b[..., 0, :]) if h0 is None else h0
    hs = []
    for t in range(b.shape[-2]):
        h = a[..., t, :] * h + b[..., t, :]
        hs.append(h)
    return torch.stack(hs, -2), h
