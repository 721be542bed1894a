"""The low-rank neural operator (the second operator family).

Kovachki, Li, Liu, Azizzadenesheli, Bhattacharya, Stuart, Anandkumar, "Neural Operator: Learning Maps
Between Function Spaces" (JMLR 2023), sec. 4.2 ("Low-rank Neural Operator"): the kernel of the
integral operator is a sum of r separable terms,

    kappa(x, y) = sum_{j=1}^{r} phi_j(x) psi_j(y)^T,       phi_j, psi_j : D -> R^{d_v},

so (K v)(x) = int_D kappa(x, y) v(y) dy = sum_j <psi_j, v>_{L^2(D)} phi_j(x): O(N r d_v) instead of
the O(N^2) of a dense kernel. The layer is v_{t+1}(x) = sigma(W v_t(x) + (K v_t)(x)) inside the same
lift / project frame as the FNO (:class:`longseq.operators.fno.FNO`), the comparison of the FNO
paper's table 1 ("LNO").
Decisions the paper leaves open:
* phi_j and psi_j are functions of x through the problem's input: each layer has two small MLPs
  (in_channels + dim -> ``kernel_width`` -> GELU -> r d_v) evaluated on the normalised (a(x), x)
  features, as the official LNO scripts feed (a(x), x) to the networks that produce phi and psi.
* the integral <psi_j, v> is the mean over the grid points (|D| = 1: the uniform-weight quadrature,
  exact for trigonometric polynomials on the periodic grid), which makes the layer independent of the
  resolution.
* GELU between layers and none after the last, 4 layers, rank 4, projection width 128, as for the FNO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import model_class
from .fno import OperatorModel, _Projection


class LowRankKernel(nn.Module):
    """``(v [B, N, d_v], feats [B, N, F]) -> [B, N, d_v]``: sum_j phi_j(x) mean_y(psi_j(y) . v(y))."""

    def __init__(self, features: int, width: int, rank: int, kernel_width: int):
        super().__init__()
        self.width, self.rank = width, rank
        self.phi = nn.Sequential(nn.Linear(features, kernel_width), nn.GELU(), nn.Linear(kernel_width, rank * width))
        self.psi = nn.Sequential(nn.Linear(features, kernel_width), nn.GELU(), nn.Linear(kernel_width, rank * width))

    def forward(self, v: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        B, N, d = v.shape
        phi = self.phi(feats).view(B, N, self.rank, d)  # [B, N, r, d_v]
        psi = self.psi(feats).view(B, N, self.rank, d)  # [B, N, r, d_v]
        coef = torch.einsum("bnrd,bnd->br", psi, v) / N  # <psi_j, v>: [B, r]
        return torch.einsum("bnrd,br->bnd", phi, coef)  # [B, N, d_v]


@model_class
class LowRankOperator(OperatorModel):
    """Low-rank neural operator on a 1D or 2D grid (module docstring)."""

    def __init__(
        self,
        dim: int = 1,
        *,
        width: int = 64,
        rank: int = 4,
        n_layers: int = 4,
        kernel_width: int = 64,
        in_channels: int = 1,
        out_channels: int = 1,
        proj_width: int = 128,
        grid: str | None = None,
        normalizer: dict | None = None,
    ):
        super().__init__(dim, in_channels, out_channels, grid, normalizer)
        if min(width, rank, n_layers, kernel_width, proj_width) < 1:
            raise ValueError("LowRankOperator: width, rank, n_layers, kernel_width and proj_width must be >= 1")
        self.config = dict(
            dim=dim,
            width=width,
            rank=rank,
            n_layers=n_layers,
            kernel_width=kernel_width,
            in_channels=in_channels,
            out_channels=out_channels,
            proj_width=proj_width,
            grid=self.grid,
            normalizer=self.norm,
        )
        feats = in_channels + dim
        self.lift = nn.Linear(feats, width)
        self.kernels = nn.ModuleList(LowRankKernel(feats, width, rank, kernel_width) for _ in range(n_layers))
        self.pointwise = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))
        self.project = _Projection(width, proj_width, out_channels)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, squeeze = self._features(inputs, mask)  # [B, *grid, F]
        grid = x.shape[1:-1]
        feats = x.flatten(1, -2)  # [B, N, F]
        v = self.lift(feats)  # [B, N, d_v]
        for i, (k, w) in enumerate(zip(self.kernels, self.pointwise)):
            v = k(v, feats) + w(v)
            if i < len(self.kernels) - 1:
                v = F.gelu(v)
        y = self.project(v).view(x.shape[0], *grid, self.out_channels)
        return self._decode(y, squeeze)
