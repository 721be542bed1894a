"""Signal propagation for deep transformers without shortcuts or norms.

He, Martens, Zhang, Botev, Brock, Smith, Teh (ICLR 2023), "Deep Transformers without Shortcuts:
Modifying Self-attention for Faithful Signal Propagation", arXiv 2302.10322.

A "vanilla" network (no skip connections, no normalisation) keeps the geometry of its inputs
only if every layer maps the token kernel (Gram matrix over positions, per channel) in a
controlled way. With ``W_Q = 0`` and orthogonal value/output weights an attention layer with a
fixed attention matrix ``A_l`` maps the kernel as ``Sigma_l = A_l Sigma_{l-1} A_l^T``; choosing a
target kernel ``Sigma_l`` per layer and ``A_l = L_l L_{l-1}^{-1}`` (``L_l`` the Cholesky factor of
``Sigma_l``, lower triangular, so ``A_l`` is causal) hits it exactly (paper sec. 4, eqs. 8-9).

Target kernels (paper sec. 4.2):

* E-SPA: ``Sigma_l[i, j] = exp(-gamma_l |i - j|)``. Decay schedule: the innovation variance of
  this Ornstein-Uhlenbeck kernel, ``1 - exp(-2 gamma_l)`` (the squared diagonal of ``L_l``), is
  geometric in depth: ``1 - exp(-2 gamma_l) = (1 - exp(-2 gamma_L))^(l / L)``, so
  ``gamma_l -> inf`` (``Sigma_0 = I``) at ``l = 0`` and ``gamma_l = gamma_L`` at the last layer.
  Decision: the paper's text was not reachable from here; this is the schedule of the
  third-party E-SPA implementation (richardcepka/SimplEsT-ViT), whose ``gamma_L = 0.005`` we use
  as the default.
* U-SPA: ``Sigma_l = (1 - rho_l) I + rho_l 1 1^T``. Decision (unverified against the paper): the
  same geometric schedule on the innovation variance, ``1 - rho_l = (1 - rho_L)^(l / L)``, with
  ``rho_L = 0.8`` by default.

``A_l`` has positive entries on and below the diagonal for both families (checked numerically up
to N = 512, 24 layers: smallest entry ~1e-194 for E-SPA, ~1e-7 for U-SPA), so it factors as
``A_l = diag(D_l) softmax(B_l)`` with ``D_l = rowsum(A_l)`` and ``B_l = log(A_l / D_l)`` (causal
part). Everything is computed in float64; entries that underflow are clamped to the smallest
positive float64 before the log (never reached in the checks above).

MLP blocks: the paper pairs SPA with TAT (Zhang et al. 2022, "Deep Learning without Shortcuts:
Shaping the Kernel with Tailored Rectifiers"): leaky-ReLU ``phi(x) = sqrt(2 / (1 + s^2))
leaky_relu(x, s)`` whose slope ``s`` is solved so that the composition of the network's C-maps
(TAT eq. 9, ``C(c) = c + (1 - s)^2 / (pi (1 + s^2)) (sqrt(1 - c^2) - c arccos c)``) sends
``c = 0`` to ``eta = 0.9``; dense weights are scaled-uniform-orthogonal (SUO), biases zero.
Our MLP has one nonlinearity per block, so the composition has ``n_layers`` C-maps; 12 or fewer
ReLU C-maps reach only ``C(0) <= 0.897 < 0.9``, so stacks of <= 12 blocks get ``s = 0`` (a
scaled ReLU), and e.g. 24 blocks get ``s = 0.2385``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("espa", "uspa")
DEFAULT_FINAL = {"espa": 0.005, "uspa": 0.8}  # gamma_L (E-SPA), rho_L (U-SPA)
TAT_ETA = 0.9


# ----------------------------------------------------------------------------- target kernels
def kernel_parameter(kind: str, layer: int, n_layers: int, final: float) -> float:
    """``gamma_l`` (E-SPA) or ``rho_l`` (U-SPA) of layer ``1 <= layer <= n_layers``."""
    if not 1 <= layer <= n_layers:
        raise ValueError(f"layer must lie in [1, n_layers={n_layers}], got {layer}")
    if kind == "espa":
        if final <= 0:
            raise ValueError(f"E-SPA needs gamma_L > 0, got {final}")
        innovation = (1.0 - math.exp(-2.0 * final)) ** (layer / n_layers)  # 1 - exp(-2 gamma_l)
        return -0.5 * math.log(1.0 - innovation)
    if kind == "uspa":
        if not 0 < final < 1:
            raise ValueError(f"U-SPA needs 0 < rho_L < 1, got {final}")
        return 1.0 - (1.0 - final) ** (layer / n_layers)
    raise ValueError(f"unknown SPA kind {kind!r}; choose one of: {', '.join(KINDS)}")


def target_kernel(kind: str, n: int, layer: int, n_layers: int, final: float | None = None) -> torch.Tensor:
    """``Sigma_l``: float64 ``[n, n]``; ``layer = 0`` is the identity (the input's kernel)."""
    if layer == 0:
        return torch.eye(n, dtype=torch.float64)
    final = DEFAULT_FINAL[kind] if final is None else final
    p = kernel_parameter(kind, layer, n_layers, final)
    if kind == "espa":
        i = torch.arange(n, dtype=torch.float64)
        return torch.exp(-p * (i[:, None] - i[None, :]).abs())
    return (1.0 - p) * torch.eye(n, dtype=torch.float64) + p


def spa_attention(kind: str, n: int, layer: int, n_layers: int, final: float | None = None) -> torch.Tensor:
    """``A_l = L_l L_{l-1}^{-1}``: the causal attention matrix at init, float64 ``[n, n]``."""
    L_cur = torch.linalg.cholesky(target_kernel(kind, n, layer, n_layers, final))
    L_prev = torch.linalg.cholesky(target_kernel(kind, n, layer - 1, n_layers, final))
    # A L_prev = L_cur, solved from the right with the lower-triangular L_prev
    return torch.linalg.solve_triangular(L_prev, L_cur, upper=False, left=False)


def bias_and_scale(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``A [n, n]`` lower-triangular, positive -> ``(B [n, n], D [n])`` with
    ``diag(D) softmax(B + causal mask) = A``. ``B`` is 0 above the diagonal (masked anyway)."""
    tri = torch.ones_like(A, dtype=torch.bool).tril()
    D = A.sum(-1)  # [n]
    P = (A / D[:, None]).clamp_min(torch.finfo(A.dtype).tiny)
    B = torch.where(tri, P.log(), torch.zeros_like(P))
    return B, D


# ----------------------------------------------------------------------------- TAT MLP
def lrelu_cmap(c: float, slope: float) -> float:
    """C-map of the normalised leaky ReLU (TAT, Zhang et al. 2022, eq. 9)."""
    c = min(max(c, -1.0), 1.0)
    return c + (1 - slope) ** 2 / (math.pi * (1 + slope**2)) * (math.sqrt(1 - c * c) - c * math.acos(c))


def tat_slope(n_nonlinear: int, eta: float = TAT_ETA) -> float:
    """Negative slope ``s`` with ``(C_s o ... o C_s)(0) = eta`` over ``n_nonlinear`` C-maps (bisection).

    The composed value falls monotonically from ReLU (s = 0) to the identity (s = 1, value 0);
    a stack too shallow to reach ``eta`` even with ReLU gets ``s = 0``."""

    def composed(s):
        c = 0.0
        for _ in range(n_nonlinear):
            c = lrelu_cmap(c, s)
        return c

    if n_nonlinear < 1 or composed(0.0) <= eta:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if composed(mid) > eta else (lo, mid)
    return 0.5 * (lo + hi)


def suo_(weight: torch.Tensor) -> torch.Tensor:
    """Scaled-uniform-orthogonal init (DKS/TAT): orthogonal, times ``max(sqrt(out / in), 1)``,
    so that ``||W x||^2 / out = ||x||^2 / in`` in expectation."""
    out_dim, in_dim = weight.shape
    with torch.no_grad():
        nn.init.orthogonal_(weight, gain=max(math.sqrt(out_dim / in_dim), 1.0))
    return weight


class TATFeedForward(nn.Module):
    """``W2 phi_s(W1 x)`` with the TAT leaky ReLU; SUO weights, zero biases.

    The slope depends on the depth of the whole stack: the backbone sets it with
    :func:`configure_tat_` after building the blocks (``neg_slope = 0``, a ReLU, until then)."""

    def __init__(self, d_model: int, mult: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(mult * d_model)
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, d_model)
        for lin in (self.w1, self.w2):
            suo_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.drop = nn.Dropout(dropout)
        self.neg_slope = 0.0

    def extra_repr(self) -> str:
        return f"neg_slope={self.neg_slope:.4f}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.neg_slope
        h = math.sqrt(2.0 / (1.0 + s * s)) * F.leaky_relu(self.w1(x), negative_slope=s)
        return self.w2(self.drop(h))


def configure_tat_(modules, eta: float = TAT_ETA) -> float:
    """Set the slope of every :class:`TATFeedForward` among ``modules`` (e.g. the backbone's
    blocks) for a network with that many nonlinearities; returns the slope."""
    ffns = [m for mod in modules for m in mod.modules() if isinstance(m, TATFeedForward)]
    s = tat_slope(len(ffns), eta)
    for f in ffns:
        f.neg_slope = s
    return s
