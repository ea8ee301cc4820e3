"""User networks for the bring-your-own-network tests: a plain module outside lightning_bnn (``byon_nets.*``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv + BatchNorm + residual + linear head for small images [B, C, H, W]."""

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), num_outputs: int = 10, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        h = torch.relu(h + self.conv(h))
        return self.head(h.mean(dim=(2, 3)))


class WrongWidth(TinyNet):
    """Ignores num_outputs: returns 3 outputs."""

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), width: int = 4) -> None:
        super().__init__(input_shape, 3, width)
