"""The public CutMix training loop's model and step, rewritten here as the end-to-end comparison's
reference ("official loop"): what clovaai/CutMix-PyTorch's ``train.py`` does per batch on CIFAR, so
that its speed can be timed in the same process as this project's loop.

Model: the CIFAR ResNet of torchvision-style code (BasicBlock, 1x1-conv + BN projection shortcuts
where the shape changes, 8x8 average pool, linear classifier), NCHW, fp32. Step: host-batch CutMix
(``pipelines.official_cutmix``), forward, lam-weighted cross-entropy of the two label sets, the
per-batch top-1/top-5 error and ``loss.item()`` that loop logs, zero_grad, backward, nesterov SGD.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.cifar_resnet import BasicBlock
from ..cutmix import CutMixBatch


class PeerBlock(BasicBlock):
    """This project's CIFAR block with the other common shortcut: 1x1 conv + BN where the shape changes.
    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, stride)
        self.project = None
        if stride != 1 or in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                         nn.BatchNorm2d(out_channels))

    def shortcut(self, x: Tensor) -> Tensor:
        return x if self.project is None else self.project(x)


class PeerResNet(nn.Module):
    """CIFAR ResNet-``depth`` (depth = 6n + 2; widths 16/32/64): (B, 3, 32, 32) -> (B, num_classes)."""

    def __init__(self, depth: int, num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110 ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, c = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(PeerBlock(c, width, stride if i == 0 else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He normal over fan-out, as that code initializes
                m.weight.data.normal_(0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.bn1(self.conv1(x)), inplace=True))
        return self.fc(F.avg_pool2d(x, x.shape[-1]).flatten(1))


def mixed_cross_entropy(logits: Tensor, labels: Tensor, mix: CutMixBatch) -> Tensor:
    """lam * CE(labels) + (1 - lam) * CE(labels[perm]); plain CE when the batch was not mixed."""
    if not mix.applied:
        return F.cross_entropy(logits, labels)
    return mix.lam * F.cross_entropy(logits, labels) + (1 - mix.lam) * F.cross_entropy(logits, labels[mix.perm])


class OfficialStep:
    """One training step of the official loop on ``device`` (fp32, NCHW); returns the logged loss."""

    def __init__(self, depth: int, num_classes: int, device: torch.device, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 1e-4):
        self.model = PeerResNet(depth, num_classes).to(device).train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr, momentum=momentum,
                                         weight_decay=weight_decay, nesterov=True)
        self.top1_err = self.top5_err = 0.0

    def __call__(self, images: Tensor, labels: Tensor, mix: CutMixBatch) -> float:
        logits = self.model(images)
        loss = mixed_cross_entropy(logits, labels, mix)
        top5 = logits.detach().topk(5, 1).indices.eq(labels[:, None])
        self.top1_err = 100.0 - 100.0 * top5[:, 0].float().mean().item()
        self.top5_err = 100.0 - 100.0 * top5.any(1).float().mean().item()
        logged = loss.item()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return logged
