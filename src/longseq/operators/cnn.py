"""A plain convolutional baseline for the operator tasks: a small 2D U-Net (Ronneberger et al. 2015),
the kind of image-to-image CNN the FNO paper compares with (table 1 "U-Net" / "ResNet"; sec. 5.2).

Encoder: per level two 3x3 convolutions with GELU, then 2x2 average pooling; ``levels`` levels with
``width * 2^l`` channels; decoder: bilinear upsampling to the skip's size, concatenation, two 3x3
convolutions; a 1x1 projection. Input features are (a(x), x, y) like the FNO's. Unlike the operators
it is tied to the grid spacing (its kernels are 3 cells wide), so it is not resolution invariant:
evaluated off its training resolution it computes a different map (the tables show it).
Decision: sized by compute rather than by parameters (a 3x3 CNN with the FNO2d's 2.37M parameters at
full resolution would cost tens of times the FNO's FLOPs): ``width`` 16 and 3 levels give 0.49M
parameters and a training step about a quarter of the FNO2d's on the same grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import model_class
from .fno import OperatorModel


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


@model_class
class UNet2d(OperatorModel):
    """Small U-Net on the unit-square node grid (module docstring)."""

    def __init__(
        self,
        *,
        width: int = 16,
        levels: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        grid: str | None = None,
        normalizer: dict | None = None,
    ):
        super().__init__(2, in_channels, out_channels, grid, normalizer)
        if width < 1 or levels < 1:
            raise ValueError(f"UNet2d: width and levels must be >= 1, got {width}, {levels}")
        self.config = dict(
            width=width,
            levels=levels,
            in_channels=in_channels,
            out_channels=out_channels,
            grid=self.grid,
            normalizer=self.norm,
        )
        chans = [width * 2**l for l in range(levels)]
        self.down = nn.ModuleList()
        cin = in_channels + 2
        for c in chans:
            self.down.append(_double_conv(cin, c))
            cin = c
        self.bottom = _double_conv(chans[-1], chans[-1] * 2)
        self.up = nn.ModuleList()
        cin = chans[-1] * 2
        for c in reversed(chans):
            self.up.append(_double_conv(cin + c, c))
            cin = c
        self.out = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x, squeeze = self._features(inputs, mask)  # [B, N1, N2, F]
        h = x.movedim(-1, 1)  # [B, F, N1, N2]
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.avg_pool2d(h, 2, ceil_mode=True)
        h = self.bottom(h)
        for block, skip in zip(self.up, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            h = block(torch.cat([h, skip], dim=1))
        return self._decode(self.out(h).movedim(1, -1), squeeze)
