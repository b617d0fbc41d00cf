"""Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks, n = (d-4)/6
blocks per stage, widths 16k/32k/64k, optional dropout between the two convs (default 0).

Follows the reference PyTorch port (xternalz/WideResNet-pytorch): when the width changes, the
1x1 projection shortcut takes the pre-activated input. WRN-40-2 has 2.24 M and WRN-28-10
36.5 M parameters with a 10-class FC.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from saol_core.config import ConfigError

from .base import Backbone, init_weights


class WideBasic(nn.Module):
    """conv3x3(relu(bn(conv3x3(relu(bn(x)))))) + shortcut: (B,C_in,H,W) -> (B,C_out,H/s,W/s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (None if in_channels == out_channels and stride == 1
                         else nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(Backbone):
    """Taps: the outputs of the three groups (16k/32k/64k channels at strides 1/2/4); the last one
    after the final BN-ReLU, i.e. what GAP pools."""

    def __init__(self, depth: int, widen: int, in_channels: int = 3, dropout: float = 0.0, last_stride: int = 2):
        super().__init__()
        if (depth - 4) % 6:
            raise ConfigError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        groups, channels = [], 16
        for width, stride in zip(widths, (1, 2, last_stride)):
            groups.append(nn.Sequential(*[WideBasic(channels if i == 0 else width, width, stride if i == 0 else 1, dropout)
                                          for i in range(n)]))
            channels = width
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[-1])
        self.stage_channels = widths
        self.stage_strides = [1, 2, 2 * last_stride]
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x1 = self.block1(self.conv1(x))
        x2 = self.block2(x1)
        return [x1, x2, F.relu(self.bn(self.block3(x2)))]
