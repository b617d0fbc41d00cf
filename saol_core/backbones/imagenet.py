"""ImageNet bottleneck ResNets / ResNeXts built by torchvision, tapped after layer1..layer4.

The module names are torchvision's (conv1, bn1, layer1.0.conv1, ...), which timm's ResNets share,
so both libraries' checkpoints load by name. ``output_stride=16`` replaces layer4's stride by
dilation 2 (torchvision's ``replace_stride_with_dilation``, as in DeepLab): the parameters are
unchanged and each pretrained 3x3 filter keeps its receptive field, while layer4 runs at 14x14
for a 224 input.
"""
from __future__ import annotations

import torch.nn as nn
from torch import Tensor
from torchvision.models.resnet import Bottleneck, ResNet

from .base import Backbone

# name -> (blocks per stage, groups, width per group); ResNet-200 is He et al.'s 2016 ImageNet model.
CONFIGS = {
    "resnet50": ([3, 4, 6, 3], 1, 64),
    "resnet101": ([3, 4, 23, 3], 1, 64),
    "resnet152": ([3, 8, 36, 3], 1, 64),
    "resnet200": ([3, 24, 36, 3], 1, 64),
    "resnext101_32x4d": ([3, 4, 23, 3], 32, 4),
}


class TorchvisionResNet(Backbone):
    """Taps: layer1..layer4 outputs, 256/512/1024/2048 channels at strides 4/8/16/32 (last 16 when
    ``dilate_last``); the last one is what torchvision's avgpool + fc classify."""

    def __init__(self, name: str, in_channels: int = 3, dilate_last: bool = False):
        super().__init__()
        layers, groups, width = CONFIGS[name]
        net = ResNet(Bottleneck, layers, groups=groups, width_per_group=width,
                     replace_stride_with_dilation=[False, False, dilate_last])  # torchvision's He init
        self.conv1 = net.conv1
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1, self.relu, self.maxpool = net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.stage_channels = [layer[-1].conv3.out_channels for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
        self.stage_strides = [4, 8, 16, 16 if dilate_last else 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        taps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            taps.append(x)
        return taps
