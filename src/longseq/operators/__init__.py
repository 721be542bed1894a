"""Neural operators: maps between function spaces learned from PDE data (Li, Kovachki et al. 2021;
Kovachki et al. 2023). Fourier layers (:mod:`.spectral`), the Fourier neural operator (:mod:`.fno`),
the low-rank neural operator (:mod:`.lowrank`), a U-Net baseline (:mod:`.cnn`), readable DFT-matrix
references (:mod:`.naive`) and resolution tables (:mod:`.evaluate`). The data come from the
``burgers`` and ``darcy`` tasks (:mod:`longseq.tasks.operator_tasks`).

``build_operator("fno" | "lowrank" | "unet", dim, **options)`` builds one by name."""

from __future__ import annotations

from .cnn import UNet2d
from .fno import FNO, FNO1d, FNO2d, OperatorModel, grid_coordinates, relative_l2
from .lowrank import LowRankOperator
from .spectral import SpectralConv1d, SpectralConv2d

OPERATORS = ("fno", "lowrank", "unet")


def build_operator(name: str, dim: int, **options) -> OperatorModel:
    """An operator model by name: ``fno`` (:class:`FNO`), ``lowrank`` (:class:`LowRankOperator`) or
    ``unet`` (:class:`UNet2d`, 2D only); ``options`` go to its constructor."""
    if name == "fno":
        return FNO(dim, **options)
    if name == "lowrank":
        return LowRankOperator(dim, **options)
    if name == "unet":
        if dim != 2:
            raise ValueError(f"operator 'unet' is 2D only, got dim={dim}")
        return UNet2d(**options)
    raise ValueError(f"unknown operator {name!r}; operators: {', '.join(OPERATORS)}")


__all__ = [
    "FNO",
    "FNO1d",
    "FNO2d",
    "LowRankOperator",
    "OPERATORS",
    "OperatorModel",
    "SpectralConv1d",
    "SpectralConv2d",
    "UNet2d",
    "build_operator",
    "grid_coordinates",
    "relative_l2",
]
