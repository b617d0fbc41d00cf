"""CIFAR ResNet of He et al. 2016 (Sec. 4.2): depth 6n+2, basic blocks, widths 16/32/64.

Shortcuts are option A (identity; when the shape changes, subsample by the stride and zero-pad
the new channels), so the net has no shortcut parameters: ResNet-110 has 1.73 M parameters
with a 10-class FC (0.27 M for ResNet-20). Module names follow the widely used
akamaster/pytorch_resnet_cifar10 code, so its checkpoints load.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from saol_core.config import ConfigError

from .base import Backbone, init_weights


class BasicBlock(nn.Module):
    """relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x)): (B,C_in,H,W) -> (B,C_out,H/s,W/s)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        # in place where the tensor is the block's own (BatchNorm's backward does not read its output):
        # the same values with fewer memory passes, as torchvision's blocks do
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)), inplace=True)))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)

    def shortcut(self, x: Tensor) -> Tensor:
        """Option A: x[::s, ::s] (the pixels the strided 3x3 conv is centred on), zero-padded channels."""
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra_channels:
            half = self.extra_channels // 2
            shortcut = F.pad(shortcut, (0, 0, 0, 0, half, self.extra_channels - half))
        return shortcut


class CifarResNet(Backbone):
    """Taps: the three stage outputs, 16/32/64 channels at strides 1/2/4 (last stride 1 when
    ``last_stride=1``); the last one is what GAP-FC pools."""

    def __init__(self, depth: int, in_channels: int = 3, last_stride: int = 2):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths, strides = (16, 32, 64), (1, 2, last_stride)
        stages, channels = [], 16
        for width, stride in zip(widths, strides):
            blocks = [BasicBlock(channels if i == 0 else width, width, stride if i == 0 else 1) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.stage_channels = list(widths)
        self.stage_strides = [1, 2, 2 * last_stride]
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x1 = self.layer1(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x2 = self.layer2(x1)
        return [x1, x2, self.layer3(x2)]
