"""DenseNet-BC for CIFAR (Huang et al. 2017): bottleneck layers + compression 0.5.

Depth d gives n = (d-4)/6 layers per dense block; the stem is a 3x3 conv to 2k channels.
DenseNet-BC-100 (k=12): 24 -> 216 | 108 -> 300 | 150 -> 342 channels, 0.77 M parameters with a
10-class FC (0.80 M with 100 classes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from saol_core.config import ConfigError

from .base import Backbone, init_weights


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), concatenated: (B,C,H,W) -> (B,C+k,H,W)."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([x, new], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (compression) then 2x2 average pooling (omitted when stride is 1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.AvgPool2d(2) if stride == 2 else nn.Identity())


class DenseNetBC(Backbone):
    """Taps: the outputs of the three dense blocks (before each transition) at strides 1/2/4;
    the last one after the final BN-ReLU, i.e. what GAP pools."""

    def __init__(self, depth: int = 100, growth: int = 12, in_channels: int = 3,
                 compression: float = 0.5, last_stride: int = 2):
        super().__init__()
        if (depth - 4) % 6:
            raise ConfigError(f"DenseNet-BC depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        channels = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)
        blocks, transitions, self.stage_channels = [], [], []
        for stage, stride in enumerate((2, last_stride, None)):
            blocks.append(nn.Sequential(*[DenseLayer(channels + i * growth, growth) for i in range(n)]))
            channels += n * growth
            self.stage_channels.append(channels)
            if stride is not None:
                out = int(channels * compression)
                transitions.append(Transition(channels, out, stride))
                channels = out
        self.block1, self.block2, self.block3 = blocks
        self.trans1, self.trans2 = transitions
        self.bn = nn.BatchNorm2d(channels)
        self.stage_strides = [1, 2, 2 * last_stride]
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x1 = self.block1(self.conv1(x))
        x2 = self.block2(self.trans1(x1))
        x3 = self.block3(self.trans2(x2))
        return [x1, x2, F.relu(self.bn(x3))]
