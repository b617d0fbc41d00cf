"""MAC counting: torchvision reference points, a hand-counted SAOL head, the ResNet-101 overhead goal."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from saol_core.config import ModelConfig
from saol_core.heads import GAPFCHead, MaskHead, SAOLHead
from saol_core.macs import IMAGENET_MID_CHANNELS, build_meta, count_macs, main
from saol_core.model import build_model

torch.set_num_threads(1)


def meta_costs(backbone, heads="gap", num_classes=1000, size=224, **kw):
    return count_macs(build_meta(ModelConfig(backbone=backbone, heads=heads, **kw), num_classes), size)


@pytest.mark.parametrize("name, gmacs", [("resnet50", 4.09), ("resnet101", 7.80)])
def test_imagenet_reference_points(name, gmacs):
    params, macs = meta_costs(name)
    assert abs(macs / 1e9 - gmacs) <= 0.01
    with torch.device("meta"):
        tv = getattr(torchvision.models, name)()
    assert (params, macs) == count_macs(tv, 224)     # backbone + GAP-FC == torchvision's classifier


def test_cifar_resnet110_reference_point():
    params, macs = meta_costs("resnet110", num_classes=10, size=32)
    assert abs(macs / 1e9 - 0.253) <= 0.0005 and abs(params / 1e6 - 1.73) <= 0.005


def test_saol_overhead_on_resnet101_within_5_percent():
    _, base = meta_costs("resnet101")
    _, saol = meta_costs("resnet101", heads="saol+gap", separable=True, head_channels=IMAGENET_MID_CHANNELS)
    assert 0 < saol / base - 1 <= 0.05


class PoolTaps(nn.Module):
    """A MAC-free stand-in backbone: tap l = the input average-pooled by stride l, channels repeated."""

    def __init__(self, channels, strides, last_only=False):
        super().__init__()
        self.channels, self.strides, self.last_only = channels, strides, last_only

    def forward(self, x):
        taps = [F.avg_pool2d(x, s).repeat(1, c // x.shape[1], 1, 1) for c, s in zip(self.channels, self.strides)]
        return taps[-1] if self.last_only else taps


@pytest.mark.parametrize("separable", [False, True])
def test_hand_counted_saol_head(separable):
    ch, strides, mid, k, out = [6, 12, 24], [4, 8, 16], 8, 10, 4    # input 32: taps 8x8, 4x4, 2x2 -> 4x4
    head = SAOLHead(ch, k, mid_channels=mid, output_size=out, separable=separable)
    p = out * out

    def block(c):   # conv3x3 (c -> mid), or depthwise 3x3 + pointwise (c -> mid), at Ho x Wo
        return (9 * c + c * mid) * p if separable else 9 * c * mid * p

    expect = sum(block(c) for c in ch) + block(ch[-1]) + mid * p + len(ch) * mid * k * p
    params, macs = count_macs(nn.Sequential(PoolTaps(ch, strides), head), 32)
    assert macs == expect
    assert params == sum(q.numel() for q in head.parameters())
    # the GAP-FC and mask heads on X^L (24 x 2 x 2): fc C_L*K; mask block + 1x1 at its own 2x2
    _, gap_macs = count_macs(nn.Sequential(PoolTaps([24], [16], last_only=True), GAPFCHead(24, k)), 32)
    assert gap_macs == 24 * k
    _, mask_macs = count_macs(nn.Sequential(PoolTaps([24], [16], last_only=True), MaskHead(24, mid, separable=separable)), 32)
    assert mask_macs == (block(24) + mid * p) // 4


def test_count_macs_same_on_cpu_and_meta_and_keeps_mode():
    cfg = ModelConfig(backbone="resnet20", mask_head=True)
    cpu = build_model(cfg, 10).train()
    assert count_macs(cpu, 32) == count_macs(build_meta(cfg, 10), 32)
    assert cpu.training


def test_cli_table_and_report(tmp_path, capsys):
    out = tmp_path / "costs.md"
    main(["--backbones", "resnet20", "--num-classes", "10", "--out", str(out)])
    text = out.read_text()
    _, gap = meta_costs("resnet20", num_classes=10, size=32)
    params, saol = meta_costs("resnet20", heads="saol", num_classes=10, size=32)
    row = next(line for line in text.splitlines() if line.startswith("| resnet20 | saol |"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[5:10] == ["64", "8x8", f"{params / 1e6:.2f}", f"{saol / 1e9:.3f}",
                           f"{100 * (saol / gap - 1):+.2f}%"]
    assert "torch " + torch.__version__ in text and row in capsys.readouterr().out


def test_meta_counts_with_shape_only_batchnorm_equal_real_counts():
    from saol_core.config import ModelConfig
    from saol_core.macs import build_meta, count_macs
    from saol_core.model import build_model
    for cfg in (ModelConfig(backbone="resnet20", heads="saol+gap", mask_head=True),
                ModelConfig(backbone="densenet_bc100", heads="saol", head_channels=16)):
        assert count_macs(build_meta(cfg, 10), 32) == count_macs(build_model(cfg, 10), 32)
