"""The Fourier neural operator (FNO) and the shared frame of the operator models.

Li, Kovachki, Azizzadenesheli et al., "Fourier Neural Operator for Parametric PDEs" (ICLR 2021),
eq. (2) and fig. 2: u = Q(v_T), v_{t+1}(x) = sigma(W v_t(x) + (K v_t)(x)), v_0 = P(a(x), x), with K
the Fourier layer (:mod:`longseq.operators.spectral`), W a pointwise linear map, P the lift and Q the
projection. Defaults from sec. 5 and the official code (zongyi-li/fourier_neural_operator, the
later revision of ``fourier_1d.py`` / ``fourier_2d.py``):
* 4 Fourier layers; Burgers k_max = 16, width d_v = 64; Darcy k_max = 12, width 32 (sec. 5.1-5.2).
* P: a linear map from (a(x), grid coordinates) to the width; Q: linear width -> 128, GELU, linear
  128 -> 1 (``fc1``, ``fc2``). GELU between layers; the last Fourier layer has no activation (the
  official code's ``x = x1 + x2`` after ``conv3``). W is a pointwise linear map with bias (the
  official 1x1 convolution).
* grid coordinates appended to the input (sec. 5: "the input is (a(x), x)"): 1D periodic data at
  x_j = j / N (the sample points of the periodic unit interval; the official code uses
  linspace(0, 1, N), which is not the same set of points at N and 2N, so we use the true ones);
  2D node grids at linspace(0, 1, N) (nodes on the boundary, as the Darcy data are).
* padding for non-periodic problems: the official 2D code zero-pads 9 cells on the right/bottom of the
  lifted field before the Fourier layers and crops after (s = 85). Decision: ``padding`` is a fraction
  of the domain, ``round(padding * (N - 1))`` cells (default 9/84 for ``FNO2d``: 9 cells at 85, 45 at
  421), so the padded domain is the same at every resolution and zero-shot super-resolution evaluates
  the same operator. 1D Burgers is periodic: no padding.
* normalisation: the official Darcy script normalises a and u pointwise (UnitGaussianNormalizer) and
  decodes before the loss; Decision: scalar mean/std (``normalizer``), which does not depend on the
  resolution; Burgers is not normalised (the official 1D script does not).
Loss: relative L2, ||u_pred - u||_2 / ||u||_2 per sample, averaged over the batch (the official
``LpLoss``; the grid spacing cancels in the ratio).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import LongseqModel, model_class
from .spectral import SpectralConv1d, SpectralConv2d

_NORM_KEYS = ("in_mean", "in_std", "out_mean", "out_std")


def relative_l2(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """||pred - target|| / ||target|| per sample over all non-batch dims (``reduction``: mean, sum, none)."""
    if pred.shape != target.shape:
        raise ValueError(f"relative_l2: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    diff = (pred - target).flatten(1).norm(dim=1)
    per = diff / target.flatten(1).norm(dim=1).clamp_min(torch.finfo(target.dtype).tiny)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    if reduction == "mean":
        return per.mean()
    raise ValueError(f"relative_l2: reduction must be mean, sum or none, got {reduction!r}")


def grid_coordinates(shape: tuple[int, ...], kind: str, like: torch.Tensor) -> torch.Tensor:
    """``[*shape, dim]`` coordinates: ``periodic`` x_j = j / N, ``closed`` linspace(0, 1, N)."""
    axes = []
    for n in shape:
        if kind == "periodic":
            axes.append(torch.arange(n, dtype=like.dtype, device=like.device) / n)
        else:
            axes.append(torch.linspace(0, 1, n, dtype=like.dtype, device=like.device))
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1)


class OperatorModel(LongseqModel):
    """Frame shared by the operator models: input checks, normalisation, grid features, the loss.

    ``forward(inputs, mask=None)``: ``inputs`` ``[B, *grid]`` (one input channel) or ``[B, *grid, C_in]``;
    returns ``[B, *grid]`` (one output channel) or ``[B, *grid, C_out]``. ``mask`` must be None (the
    trainer passes the batch's mask slot)."""

    def __init__(self, dim: int, in_channels: int, out_channels: int, grid: str | None, normalizer: dict | None):
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: dim must be 1 or 2, got {dim}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"{type(self).__name__}: in_channels and out_channels must be >= 1")
        grid = grid or ("periodic" if dim == 1 else "closed")
        if grid not in ("periodic", "closed"):
            raise ValueError(f"{type(self).__name__}: grid must be 'periodic' or 'closed', got {grid!r}")
        norm = {**dict(in_mean=0.0, in_std=1.0, out_mean=0.0, out_std=1.0), **(normalizer or {})}
        unknown = sorted(set(norm) - set(_NORM_KEYS))
        if unknown or norm["in_std"] <= 0 or norm["out_std"] <= 0:
            raise ValueError(
                f"{type(self).__name__}: normalizer takes {_NORM_KEYS} with positive stds, got {normalizer}"
            )
        self.dim, self.in_channels, self.out_channels, self.grid = dim, in_channels, out_channels, grid
        self.norm = {k: float(norm[k]) for k in _NORM_KEYS}

    def _features(self, inputs: torch.Tensor, mask) -> tuple[torch.Tensor, bool]:
        """-> normalised input with the grid appended ``[B, *grid, C_in + dim]``, and whether to squeeze."""
        if mask is not None:
            raise ValueError(f"{type(self).__name__} takes no mask (inputs are functions on a full grid)")
        if not inputs.is_floating_point():
            raise ValueError(f"{type(self).__name__}: inputs must be floating point, got {inputs.dtype}")
        squeeze = inputs.dim() == self.dim + 1
        x = inputs.unsqueeze(-1) if squeeze else inputs
        if x.dim() != self.dim + 2 or x.shape[-1] != self.in_channels:
            axes = ", ".join(["N"] * self.dim)
            raise ValueError(
                f"{type(self).__name__}: expected inputs [B, {axes}] or [B, {axes}, {self.in_channels}], "
                f"got shape {tuple(inputs.shape)}"
            )
        if min(x.shape[1:-1]) < 1:
            raise ValueError(f"{type(self).__name__}: empty grid {tuple(inputs.shape)}")
        x = (x - self.norm["in_mean"]) / self.norm["in_std"]
        g = grid_coordinates(tuple(x.shape[1:-1]), self.grid, x).expand(x.shape[0], *x.shape[1:-1], self.dim)
        return torch.cat([x, g], dim=-1), squeeze and self.out_channels == 1

    def _decode(self, y: torch.Tensor, squeeze: bool) -> torch.Tensor:
        y = y * self.norm["out_std"] + self.norm["out_mean"]
        return y.squeeze(-1) if squeeze else y

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return relative_l2(pred, target.to(pred.dtype))


class Pointwise(nn.Linear):
    """W: the same linear map at every grid point on channels-first fields ``[B, C, *grid]`` (the
    official code's 1x1 convolution; an einsum runs faster than the CPU's 1x1 convolution backward)."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("oi,bi...->bo...", self.weight, v)
        return y + self.bias.view(-1, *([1] * (v.dim() - 2)))


class _Projection(nn.Module):
    """Q: linear width -> proj_width, GELU, linear proj_width -> out_channels (channels last)."""

    def __init__(self, width: int, proj_width: int, out_channels: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, proj_width), nn.Linear(proj_width, out_channels)

    def forward(self, v):
        return self.fc2(F.gelu(self.fc1(v)))


@model_class
class FNO(OperatorModel):
    """Fourier neural operator on a 1D or 2D grid (module docstring for the defaults and decisions)."""

    def __init__(
        self,
        dim: int = 1,
        *,
        modes: int = 16,
        width: int = 64,
        n_layers: int = 4,
        in_channels: int = 1,
        out_channels: int = 1,
        proj_width: int = 128,
        padding: float | None = None,
        grid: str | None = None,
        normalizer: dict | None = None,
    ):
        super().__init__(dim, in_channels, out_channels, grid, normalizer)
        if min(modes, width, n_layers, proj_width) < 1:
            raise ValueError(
                f"FNO: modes, width, n_layers and proj_width must be >= 1, got {modes}, {width}, "
                f"{n_layers}, {proj_width}"
            )
        padding = (0.0 if dim == 1 else 9 / 84) if padding is None else float(padding)
        if not 0 <= padding <= 1:
            raise ValueError(f"FNO: padding is a fraction of the domain in [0, 1], got {padding}")
        self.config = dict(
            dim=dim,
            modes=modes,
            width=width,
            n_layers=n_layers,
            in_channels=in_channels,
            out_channels=out_channels,
            proj_width=proj_width,
            padding=padding,
            grid=self.grid,
            normalizer=self.norm,
        )
        self.padding = padding
        self.lift = nn.Linear(in_channels + dim, width)  # P
        if dim == 1:
            self.spectral = nn.ModuleList(SpectralConv1d(width, width, modes) for _ in range(n_layers))
        else:
            self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes, modes) for _ in range(n_layers))
        self.pointwise = nn.ModuleList(Pointwise(width, width) for _ in range(n_layers))  # W
        self.project = _Projection(width, proj_width, out_channels)  # Q

    def pad_cells(self, n: int) -> int:
        return int(round(self.padding * (n - 1)))

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, squeeze = self._features(inputs, mask)  # [B, *grid, C_in + dim]
        v = self.lift(x).movedim(-1, 1)  # [B, width, *grid]
        grid = v.shape[2:]
        pads = [self.pad_cells(n) for n in grid]
        if any(pads):  # zero cells after the last node of each axis
            v = F.pad(v, [p for n in reversed(pads) for p in (0, n)])
        for i, (k, w) in enumerate(zip(self.spectral, self.pointwise)):
            v = k(v) + w(v)  # K v + W v
            if i < len(self.spectral) - 1:
                v = F.gelu(v)
        if any(pads):
            v = v[(...,) + tuple(slice(0, n) for n in grid)]
        return self._decode(self.project(v.movedim(1, -1)), squeeze)


@model_class
class FNO1d(FNO):
    """FNO on the periodic unit interval (Burgers defaults: modes 16, width 64)."""

    def __init__(self, *, modes: int = 16, width: int = 64, **kw):
        kw.pop("dim", None)
        super().__init__(1, modes=modes, width=width, **kw)
        self.config.pop("dim")


@model_class
class FNO2d(FNO):
    """FNO on the unit square (Darcy defaults: modes 12, width 32, padding 9/84 of the domain)."""

    def __init__(self, *, modes: int = 12, width: int = 32, **kw):
        kw.pop("dim", None)
        super().__init__(2, modes=modes, width=width, **kw)
        self.config.pop("dim")
