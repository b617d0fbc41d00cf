"""Backbone + output layers (SAOL, GAP-FC, SS1 mask head) -> :class:`ModelOutput`.

``build_model(cfg.model, num_classes)`` is the one entry point the training code uses. Heads:
``gap`` (the baseline), ``saol`` or ``saol+gap`` (SAOL with the self-distilled GAP-FC head of
Sec. 3.3). Absent parts of the output are None.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn

from saol_core.backbones import build_backbone
from saol_core.config import ConfigError, ModelConfig
from saol_core.heads import GAPFCHead, MaskHead, SAOLHead

HEADS = ("gap", "saol", "saol+gap")


@dataclass
class ModelOutput:
    saol_log_probs: Tensor | None      # (B,K)  log y_hat of SAOL (Eq. 2, log space)
    gap_logits: Tensor | None          # (B,K)  GAP-FC logits (pre-softmax)
    log_attention: Tensor | None       # (B,Ho,Wo) log A (log-softmax over Ho*Wo positions)
    spatial_log_probs: Tensor | None   # (B,K,Ho,Wo) log Y (log-softmax over classes)
    mask_logits: Tensor | None         # (B,Ho,Wo) SS1 mask head logits (pre-sigmoid)
    features: Tensor                   # (B,C_L,H_L,W_L) last tap (for CAM / Grad-CAM)

    @property
    def attention(self) -> Tensor | None:
        """(B,Ho,Wo) A = exp(log A), sums to 1 over positions."""
        return None if self.log_attention is None else self.log_attention.exp()


def _check_taps(taps: Sequence[int] | None, n_stages: int) -> list[int]:
    """Selected stages, sorted; None = all. The last stage must be in: it is X^L, the attention input."""
    valid = list(range(n_stages))
    if taps is None:
        return valid
    taps = list(taps)
    if not taps or any(t not in valid for t in taps) or len(set(taps)) != len(taps):
        raise ConfigError(f"model.taps={taps} is not valid: give distinct stage indices from {valid} "
                          f"(None = all)")
    if valid[-1] not in taps:
        raise ConfigError(f"model.taps={taps} must include the last stage {valid[-1]}: SAOL's attention "
                          f"branch reads X^L (Table 4's variants all use it); valid indices {valid}")
    return sorted(taps)


class SAOLModel(nn.Module):
    """Backbone and heads. ``forward(x)``: (B,C,H,W) images -> :class:`ModelOutput`.

    Attributes: ``backbone``, ``saol`` (SAOLHead | None), ``gap`` (GAPFCHead | None), ``mask``
    (MaskHead | None), ``taps`` (stages feeding SAOL's spatial logits), ``num_classes``,
    ``backbone_bn`` ("frozen": ``train()`` leaves the backbone's BatchNorm layers in eval mode) and
    ``backbone_still`` (:meth:`hold_backbone`: no gradient for its weights, BatchNorm in eval mode too).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, heads: str = "saol+gap",
                 taps: Sequence[int] | None = None, head_channels: int = 64,
                 output_size: int | None = None, separable: bool = False, mask_head: bool = False,
                 backbone_bn: str = "batch"):
        super().__init__()
        if heads not in HEADS:
            raise ConfigError(f"model.heads={heads!r} is not valid; choose one of {list(HEADS)}")
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes} must be >= 2")
        if output_size is not None and output_size < 1:
            raise ConfigError(f"model.output_size={output_size} must be >= 1 (or None)")
        if backbone_bn not in ("batch", "frozen"):
            raise ConfigError(f"model.backbone_bn={backbone_bn!r} is not valid; choose 'batch' or 'frozen'")
        channels = list(backbone.stage_channels)
        self.backbone = backbone
        self.backbone_bn = backbone_bn
        self.backbone_still = False
        self.num_classes = num_classes
        self.taps = _check_taps(taps, len(channels))
        self.saol = (SAOLHead([channels[t] for t in self.taps], num_classes, head_channels,
                              output_size, separable) if "saol" in heads else None)
        self.gap = GAPFCHead(channels[-1], num_classes) if "gap" in heads else None
        self.mask = (MaskHead(channels[-1], head_channels, output_size, separable)
                     if mask_head else None)

    def hold_backbone(self, still: bool) -> None:
        """Hold the backbone still (heads-only training: ``train.freeze_backbone_epochs``) or let it train."""
        self.backbone_still = still
        for p in self.backbone.parameters():
            p.requires_grad_(not still)
        self.train(self.training)

    def train(self, mode: bool = True) -> "SAOLModel":
        super().train(mode)
        if mode and (self.backbone_bn == "frozen" or self.backbone_still):
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor, spatial_only: bool = False) -> ModelOutput:
        """``spatial_only``: compute log Y alone (backbone + SAOL's class branches; no attention, GAP-FC
        or mask head): the other fields are None. SS2's teacher forward uses it."""
        stages = self.backbone(x)
        features = stages[-1]
        taps = [stages[t] for t in self.taps]
        if spatial_only:
            if self.saol is None:
                raise ValueError("spatial_only=True needs a SAOL head (model.heads=saol or saol+gap)")
            return ModelOutput(None, None, None, self.saol.spatial_log_probs(taps), None, features)
        saol = self.saol(taps) if self.saol is not None else None
        return ModelOutput(
            saol_log_probs=saol.saol_log_probs if saol is not None else None,
            gap_logits=self.gap(features) if self.gap is not None else None,
            log_attention=saol.log_attention if saol is not None else None,
            spatial_log_probs=saol.spatial_log_probs if saol is not None else None,
            mask_logits=self.mask(features) if self.mask is not None else None,
            features=features,
        )


def build_model(cfg: ModelConfig, num_classes: int) -> SAOLModel:
    """Backbone ``cfg.backbone`` (output_stride / shakedrop / pretrained passed on) + the configured heads."""
    backbone = build_backbone(cfg.backbone, output_stride=cfg.output_stride, shakedrop=cfg.shakedrop,
                              pretrained=cfg.pretrained)
    return SAOLModel(backbone, num_classes, heads=cfg.heads, taps=cfg.taps,
                     head_channels=cfg.head_channels, output_size=cfg.output_size,
                     separable=cfg.separable, mask_head=cfg.mask_head, backbone_bn=cfg.backbone_bn)
