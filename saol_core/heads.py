"""Output layers: SAOL (Kim et al., CVPR 2020, Sec. 3.1), the GAP-FC baseline and the SS1 mask head.

Shapes: B batch, K classes, C_l channels of backbone tap l (shallow -> deep, the last is X^L),
(Ho, Wo) the SAOL output resolution (default: the last tap's). Every head returns float32 tensors,
also under bf16 autocast: the softmaxes and the logsumexp of Eq. 2 run in float32.

[decisions] (the paper is silent; docs/method.md §1 and §7):
- Resizing a tap to Ho x Wo: adaptive average pooling when shrinking, bilinear (align_corners=False)
  when enlarging, identity when equal (:func:`resize`).
- Head convs: conv3x3 + BN + ReLU. ``separable=True`` (the paper's ImageNet variant) replaces each
  by a MobileNet-v1 block: depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU. The 1x1
  output convs (attention logit, class logits, mask logit) stay plain 1x1 convs.
- Init: convs followed by BN are kaiming-normal (fan_out, ReLU) as in torchvision's ResNets; the
  class/mask output convs keep PyTorch's default init (the same as GAP-FC's ``nn.Linear``). The
  attention logit conv is zero-initialised so that A starts uniform: SAOL then starts as the plain
  spatial average of Y (a GAP over class probabilities) instead of committing to random positions.
  Its gradient is non-zero from the first step (d log y_k / d s_ij = A_ij (Y_kij / y_k - 1)); only
  the attention branch's 3x3 block waits one step for its first gradient, as with torchvision's
  ``zero_init_residual``. It has no bias: a constant shift is cancelled by the spatial softmax.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pair(size: int | Sequence[int]) -> tuple[int, int]:
    """An int side or an (h, w) pair -> (h, w) ints."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,C,H,W) -> (B,C,*size): average pooling when shrinking, bilinear when enlarging.

    A mixed case (one side shrinks, the other grows) is resampled bilinearly.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h >= size[0] and w >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def conv_bn_relu(c_in: int, c_out: int, separable: bool = False) -> nn.Sequential:
    """(B,c_in,H,W) -> (B,c_out,H,W): conv3x3+BN+ReLU, or dw3x3+BN+ReLU + pw1x1+BN+ReLU if separable."""
    if separable:
        layers = [nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                  nn.ReLU(inplace=True), nn.Conv2d(c_in, c_out, 1, bias=False)]
    else:
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SAOLOutput(NamedTuple):
    log_attention: Tensor       # (B,Ho,Wo)   log A, log-softmax over the Ho*Wo positions
    spatial_log_probs: Tensor   # (B,K,Ho,Wo) log Y, log-softmax over the K classes
    saol_log_probs: Tensor      # (B,K)       log y_hat = logsumexp_ij(log A_ij + log Y_kij)


class SAOLHead(nn.Module):
    """Spatially Attentive Output Layer.

    Args:
        in_channels: C_l of the selected taps, shallow -> deep; the last one is X^L and also feeds the
            attention branch.
        num_classes: K.
        mid_channels: C_mid of every head conv.
        output_size: (Ho, Wo) or an int; None = the last tap's resolution.
        separable: depthwise-separable 3x3 convs (the paper's ImageNet variant).

    ``forward(taps)``: taps[l] is (B,C_l,H_l,W_l) -> :class:`SAOLOutput`.
    Submodules: ``attention`` (X^L -> attention logits s, (B,1,Ho,Wo)), ``branches[l]`` (tap l ->
    (B,C_mid,Ho,Wo)), ``classifier`` (concatenated branches -> class logits z, (B,K,Ho,Wo)).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, mid_channels: int = 64,
                 output_size: int | Sequence[int] | None = None, separable: bool = False):
        super().__init__()
        in_channels = list(in_channels)
        self.output_size = None if output_size is None else pair(output_size)
        logit = nn.Conv2d(mid_channels, 1, 1, bias=False)
        nn.init.zeros_(logit.weight)
        self.attention = nn.Sequential(conv_bn_relu(in_channels[-1], mid_channels, separable), logit)
        self.branches = nn.ModuleList(conv_bn_relu(c, mid_channels, separable) for c in in_channels)
        self.classifier = nn.Conv2d(mid_channels * len(in_channels), num_classes, 1)

    def _resized(self, taps: Sequence[Tensor]) -> tuple[tuple[int, int], list[Tensor]]:
        size = self.output_size or tuple(taps[-1].shape[-2:])
        return size, [resize(t, size) for t in taps]

    def _spatial_log_probs(self, xs: Sequence[Tensor]) -> Tensor:
        z = self.classifier(torch.cat([b(x) for b, x in zip(self.branches, xs)], 1))  # (B,K,Ho,Wo)
        return z.float().log_softmax(1)

    def spatial_log_probs(self, taps: Sequence[Tensor]) -> Tensor:
        """log Y alone, (B,K,Ho,Wo): the attention branch is not run (SS2's teacher needs only this)."""
        return self._spatial_log_probs(self._resized(taps)[1])

    def forward(self, taps: Sequence[Tensor]) -> SAOLOutput:
        size, xs = self._resized(taps)
        log_a = self.attention(xs[-1]).float().flatten(1).log_softmax(1)              # (B,Ho*Wo)
        log_y = self._spatial_log_probs(xs)
        log_p = torch.logsumexp(log_y.flatten(2) + log_a.unsqueeze(1), dim=2)         # Eq. 2
        return SAOLOutput(log_a.view(-1, *size), log_y, log_p)


class GAPFCHead(nn.Module):
    """The usual output layer: (B,C,H,W) -> global average pool -> ``fc`` -> logits (B,K) (pre-softmax)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1)).float()


class MaskHead(nn.Module):
    """SS1 auxiliary head, shaped like the attention branch: (B,C,H,W) -> mask logits (B,Ho,Wo).

    The tap is resized to ``output_size`` (None = its own resolution) like SAOL's; the sigmoid is
    left to the loss (BCE with logits).
    """

    def __init__(self, in_channels: int, mid_channels: int = 64,
                 output_size: int | Sequence[int] | None = None, separable: bool = False):
        super().__init__()
        self.output_size = None if output_size is None else pair(output_size)
        self.layers = nn.Sequential(conv_bn_relu(in_channels, mid_channels, separable),
                                    nn.Conv2d(mid_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        size = self.output_size or tuple(x.shape[-2:])
        return self.layers(resize(x, size)).float()[:, 0]
