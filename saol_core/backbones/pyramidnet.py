"""PyramidNet with bottleneck blocks (Han et al. 2017) for CIFAR, optionally with ShakeDrop.

Depth d gives n = (d-2)/9 bottleneck blocks per stage (3n in all). The bottleneck width grows by
alpha / (3n) after every block (additive widening), from 16 to 16 + alpha, and each block outputs
4x its bottleneck width. Shortcuts are parameter-free: 2x2 average pooling when the block has
stride 2, zero-padding of the new channels. Follows the authors' code (dyhan0920/PyramidNet-PyTorch,
also used by CutMix and the ShakeDrop PyTorch ports), whose module names are kept.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from saol_core.config import ConfigError

from .base import Backbone, init_weights
from .shakedrop import ShakeDrop, linear_drop_probs


class PyramidBottleneck(nn.Module):
    """BN-conv1x1-BN-ReLU-conv3x3(s)-BN-ReLU-conv1x1(4w)-BN [-ShakeDrop] + shortcut.
    (B,C_in,H,W) -> (B,4*width,H/s,W/s)."""

    def __init__(self, in_channels: int, width: int, stride: int, p_drop: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(4 * width)
        self.shake_drop = ShakeDrop(p_drop) if p_drop > 0 else nn.Identity()
        self.downsample = nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.extra_channels = 4 * width - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.bn4(self.conv3(F.relu(self.bn3(out))))
        out = self.shake_drop(out)
        shortcut = self.downsample(x)
        if self.extra_channels:  # widths only grow: pad the shortcut's missing channels with zeros
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return out + shortcut


class PyramidNet(Backbone):
    """Taps: the three stage outputs at strides 1/2/4; the last one after the final BN-ReLU.

    ``shakedrop`` is the drop probability of the last block; block l of L uses shakedrop * l / L
    (0 = no ShakeDrop). PyramidNet-200 (alpha=240) has 26.8 M parameters with a 100-class FC.
    """

    def __init__(self, depth: int, alpha: float, in_channels: int = 3, shakedrop: float = 0.0,
                 last_stride: int = 2):
        super().__init__()
        if (depth - 2) % 9:
            raise ConfigError(f"bottleneck PyramidNet depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        step = alpha / (3 * n)
        probs = linear_drop_probs(3 * n, shakedrop)
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, channels, width, block = [], 16, 16.0, 0
        self.stage_channels = []
        for stride in (1, 2, last_stride):
            layers = []
            for i in range(n):
                width += step
                layers.append(PyramidBottleneck(channels, int(round(width)), stride if i == 0 else 1, probs[block]))
                channels, block = 4 * int(round(width)), block + 1
            stages.append(nn.Sequential(*layers))
            self.stage_channels.append(channels)
        self.layer1, self.layer2, self.layer3 = stages
        self.bn_final = nn.BatchNorm2d(channels)
        self.stage_strides = [1, 2, 2 * last_stride]
        init_weights(self)

    def forward(self, x: Tensor) -> list[Tensor]:
        x1 = self.layer1(self.bn1(self.conv1(x)))
        x2 = self.layer2(x1)
        return [x1, x2, F.relu(self.bn_final(self.layer3(x2)))]
