"""An example of bringing your own network: a small residual CNN with BatchNorm for 28x28 images.

It is an ordinary ``torch.nn`` module, with nothing Bayesian in it: the config
``fashion_mnist_resnet.yaml`` names it by class path (``lightning_bnn.nn.resnet.ResidualCNN``)
and makes its last residual block and its head Bayesian with ``bayesian_layers``
(see :func:`lightning_bnn.nn.convert.bayesianize`).

Layout (``width`` w): stem conv3x3(w) + BN + ReLU at 28x28; ``blocks.0`` (w, 28x28),
``blocks.1`` (2w, stride 2: 14x14), ``blocks.2`` (4w, stride 2: 7x7), each two conv3x3 + BN with
an identity or 1x1-conv shortcut (He et al. 2016); global average pooling; ``head`` linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the shortcut a 1x1 conv + BN where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResidualCNN(nn.Module):
    """A three-block residual CNN for [B, C, H, W] images (28x28 by default), returning [B, num_outputs].

    Args:
        input_shape: [C, H, W] of one image (linked from the data module).
        num_outputs: outputs (classes; linked from the data and the likelihood).
        width: channels of the first block; the second and third have 2x and 4x.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_outputs: int = 10, width: int = 16) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ResidualCNN needs image inputs [C, H, W], got input_shape={list(input_shape)}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        channels = int(input_shape[0])
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            ResidualBlock(width, width), ResidualBlock(width, 2 * width, 2), ResidualBlock(2 * width, 4 * width, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * width, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))
